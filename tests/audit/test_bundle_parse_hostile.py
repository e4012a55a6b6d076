"""parse_bundle on any bytes: a bundle, or BundleError saying why not; never another exception
(`governor audit export --url` and the bundle readers print BundleError as one `error:` line:
an AttributeError or KeyError was a traceback)."""

from __future__ import annotations

import hashlib

import orjson
import pytest

from audit.bundle import BUNDLE_FORMAT, BundleError, parse_bundle


def _bundle(lines: list[bytes], **manifest: object) -> bytes:
    body = b"".join(line + b"\n" for line in lines)
    m = {"format": BUNDLE_FORMAT, "sha256": hashlib.sha256(body).hexdigest(),
         "line_sha256": [hashlib.sha256(line).hexdigest() for line in lines], "counts": {}}
    m.update(manifest)
    return orjson.dumps({"record": "manifest", "data": m}) + b"\n" + body


HOSTILE = [
    b"null\n", b"[1]\n", b"1\n", b'"manifest"\n', b"true\n",  # JSON, not an object
    _bundle([b"not json"]),  # a line the manifest lists, but not JSON
    _bundle([b"[1, 2]"]),  # a line that is JSON but not an object
    _bundle([b"null"]),
    _bundle([b'{"record": "call", "data": {}}'], line_sha256={"0": "x"}),  # not a list
    _bundle([b'{"record": "call", "data": {}}'], line_sha256=5),
    _bundle([b'{"record": "call", "data": {}}'], line_sha256=[7]),
]


@pytest.mark.parametrize("raw", HOSTILE)
def test_anything_not_a_bundle_is_a_bundle_error(raw: bytes) -> None:
    with pytest.raises(BundleError):
        parse_bundle(raw)


def test_a_well_formed_bundle_still_parses() -> None:
    b = parse_bundle(_bundle([b'{"record": "call", "data": {"call_id": "c1"}}'],
                             counts={"call": 1}))
    assert b.records == {"call": [{"call_id": "c1"}]}
