"""Config versions: content ids, secrets never in a body, bodies that decide like the original."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import orjson
import pytest

from activities.config_source import load_config_dir
from audit.decisions import Reads, record_decision, redecide
from audit.versions import (
    MAX_PENDING,
    VERSION_ID,
    AppliedVersions,
    config_from_body,
    version_of,
)
from policies.config.models import Provider
from policies.decision import decide
from policies.identity import Identity
from policies.refusals import Refusal
from policies.routing import plan_route
from tests.support.servers import make_config_dir

SECRET = "sk-live-0123456789abcdefghij"
WEBHOOK = "https://hooks.example.com/services/T000/B000/XXXXSECRETXXXX"
NOTIFY = f"""
type: gateway-notification-targets
targets:
  - name: literal
    url: {WEBHOOK}
"""


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_config_dir(tmp_path_factory.mktemp("cfg"), {"zz-notify.yaml": NOTIFY})


def test_a_version_is_a_content_hash_without_secrets(config_dir: Path) -> None:
    cfg = load_config_dir(config_dir)
    secret = Provider(name="s", protocol="openai", base_url="http://127.0.0.1:1", api_key=SECRET)
    with_secret = dataclasses.replace(cfg, providers={**cfg.providers, "s": secret})
    v = version_of(with_secret)
    assert VERSION_ID.match(v.version_id)
    assert SECRET not in v.body and WEBHOOK not in v.body and "XXXXSECRET" not in v.body
    body = orjson.loads(v.body)
    assert body["providers"]["s"]["api_key"].startswith("sha256:")
    targets = body["extra"]["gateway-notification-targets"][-1]["targets"]
    assert targets[0]["url"].startswith("sha256:")  # a webhook URL holds its token
    # the same config, its dicts built in another order: the same id
    shuffled = dataclasses.replace(
        with_secret, providers=dict(reversed(list(with_secret.providers.items()))))
    assert version_of(shuffled).version_id == v.version_id
    # another secret is another version (the digest is in the body), and so is another ceiling
    other = Provider(name="s", protocol="openai", base_url="http://127.0.0.1:1", api_key="x")
    assert version_of(dataclasses.replace(
        cfg, providers={**cfg.providers, "s": other})).version_id != v.version_id
    b = cfg.budgets[0]
    cheaper = dataclasses.replace(
        cfg, budgets=(b.model_copy(update={"ceiling_usd": b.ceiling_usd + 1}), *cfg.budgets[1:]))
    assert version_of(cheaper).version_id != version_of(cfg).version_id


def test_a_stored_body_decides_every_call_as_the_applied_config_did(config_dir: Path) -> None:
    cfg = load_config_dir(config_dir)
    back = config_from_body(version_of(cfg).body)
    now = time.time()
    for project, model in [("demo-budget", "code-review-strong"), ("demo", "intent-fast"),
                           ("platform-search", "support-cheap"), ("x", "no-such-model")]:
        ident = Identity(key_id="k", user="u", team="t", role="developer", subject_type="user",
                         project=project, session_id="s", workflow_tag="w")
        reads = [Reads({}), Reads({}), Reads({}), Reads({})]
        try:
            pre = decide(cfg, ident, model, reads[0], reads[1], now, 5000, False,
                         est_output_tokens=4000, reserved_rates=reads[2],
                         reserved_spend=reads[3])
            err = None
        except Refusal as exc:  # a refusal is a decision too
            pre, err = None, exc
        rec = record_decision(*reads, model, now, 5000, 4000, None, ident, pre, err)  # type: ignore[arg-type]
        row = {"key_id": "k", "user": "u", "team": "t", "project": project, "session_id": "s",
               "workflow_tag": "w"}
        again = redecide(back, row, orjson.loads(orjson.dumps(rec)), decide, plan_route)
        assert again.decision == rec["o"], project


def test_a_damaged_body_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="cannot be read"):
        config_from_body("{not json")
    with pytest.raises(ValueError, match="cannot be read"):
        config_from_body('{"budgets": [{"id": 1}]}')


def test_pending_versions_are_bounded(config_dir: Path) -> None:
    cfg = load_config_dir(config_dir)
    keep = AppliedVersions()
    for i in range(MAX_PENDING + 10):
        s = cfg.settings.model_copy(update={"untagged_project": f"U{i}"})
        keep.applied(dataclasses.replace(cfg, settings=s), "reload", float(i))
    assert len(keep.pending) == MAX_PENDING


def test_a_damaged_decision_record_is_skipped_with_a_reason(config_dir: Path) -> None:
    from audit.replay import ReplayReport, SessionRecord, replay_decisions

    v = version_of(load_config_dir(config_dir))
    bad = {"v": 1, "o": ["allow", "intent-fast", None], "t": 1.0, "r": [["only-two", 1]]}
    rows = [
        {"call_id": "c1", "config_version": v.version_id, "decision_record": orjson.dumps(bad)
         .decode(), "project": "demo"},
        {"call_id": "c2", "config_version": v.version_id, "decision_record": "{not json"},
        {"call_id": "c3", "config_version": "cv-0000000000000000",
         "decision_record": orjson.dumps(bad).decode()},
    ]
    report = ReplayReport("s")
    replay_decisions(SessionRecord("s", rows, {v.version_id: v.body}), report)
    assert report.decisions == 0 and report.divergences == []
    why = dict(report.skipped)
    assert "unreadable" in why["c1"] and "no decision record" in why["c2"]
    assert "not stored" in why["c3"]
