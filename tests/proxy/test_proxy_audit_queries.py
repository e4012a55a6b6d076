"""The audit routes' query values (issue 9: hostile input): an offset, limit or since that is
not a number in range is a 400 `invalid_request` in the admin JSON error shape, never a 500 and
never a query run with a value nobody asked for. The proxy is real (uvicorn, SQLite ledger) and
the key an auditor's."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from simulator.server import SimServer
from tests.support.servers import InProcessProxy, make_config_dir

pytestmark = pytest.mark.asyncio(loop_scope="session")

AUDITOR = {"authorization": "Bearer gk-dev-auditor"}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def ap(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[InProcessProxy]:
    cfg = make_config_dir(tmp_path_factory.mktemp("audit-q-config"))
    async with SimServer(port=0) as sim:
        p = InProcessProxy(cfg, tmp_path_factory.mktemp("audit-q-data"), sim.base_url)
        await p.start()
        try:
            yield p
        finally:
            await p.stop()


def _is_admin_400(r: httpx.Response, name: str) -> None:
    assert r.status_code == 400, r.text
    doc = r.json()
    assert set(doc) == {"error"} and set(doc["error"]) == {"code", "message"}, doc
    assert doc["error"]["code"] == "invalid_request"
    assert f"`{name}`" in doc["error"]["message"], doc


@pytest.mark.parametrize(
    "query",
    ["offset=-5", "offset=abc", "offset=1.5", "offset=1000000001", "offset=%C2%B2",
     "limit=abc", "limit=5001", "limit=-1", "limit=1e3", "limit=+5", "limit=%20%205",
     "limit=%C2%B2", "limit=%D9%A3", "limit=99999999999999999999999999"],
)  # fmt: skip
async def test_audit_show_refuses_a_bad_offset_or_limit_with_400(
    ap: InProcessProxy, query: str
) -> None:
    """`²` (superscript two) and `٣` (Arabic-Indic three) are `str.isdigit()`: the first made
    `int()` raise (a 500), the second was read as 3."""
    async with httpx.AsyncClient(base_url=ap.base_url, timeout=30) as h:
        r = await h.get(f"/gateway/audit/sessions/s1?{query}", headers=AUDITOR)
    _is_admin_400(r, query.split("=")[0])


@pytest.mark.parametrize(
    "query", ["since=abc", "since=-1", "since=nan", "since=inf", "since=1e999", "since=0x10"]
)
async def test_audit_verify_refuses_a_bad_since_with_400(ap: InProcessProxy, query: str) -> None:
    async with httpx.AsyncClient(base_url=ap.base_url, timeout=30) as h:
        r = await h.get(f"/gateway/audit/verify?{query}", headers=AUDITOR)
    _is_admin_400(r, "since")


async def test_audit_show_takes_the_bounds_themselves(ap: InProcessProxy) -> None:
    async with httpx.AsyncClient(base_url=ap.base_url, timeout=30) as h:
        for query in ("offset=0&limit=0", "offset=1000000000&limit=5000", "limit=1"):
            r = await h.get(f"/gateway/audit/sessions/no-such?{query}", headers=AUDITOR)
            assert r.status_code == 404 and r.json()["error"]["code"] == "session_not_found", (
                query,
                r.text,
            )


@pytest.mark.parametrize("oid", ["%C2%B2", "%D9%A3", "9" * 19, "9" * 5000, "-1"])
async def test_clearing_an_override_by_a_bad_id_is_400(ap: InProcessProxy, oid: str) -> None:
    """The override id is a path segment: `²` made `int()` raise and 5,000 digits passed
    `isdigit()` into `int()` past its digit limit (both a 500); 19 digits overflow a bigint."""
    async with httpx.AsyncClient(base_url=ap.base_url, timeout=30) as h:
        r = await h.delete(
            f"/gateway/overrides/{oid}", headers={"authorization": "Bearer gk-dev-admin"}
        )
    assert r.status_code in (400, 431), r.text
    if r.status_code == 400:
        assert r.json()["error"]["code"] == "invalid_request"
