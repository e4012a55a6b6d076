"""The lease-key string caches of shared limits are bounded (issue 9: memory is bounded by
configuration, not by callers): a new session id per call makes a new rate counter, lease key
string and unit list each, ~1 KB with a 256-character id; past `MAX_LEASE_KEYS` /
`MAX_UNIT_CACHE` entries the caches start over (a miss costs one f-string), so 60,000 invented
sessions hold at most ~20 MB here, not the ~100 MB the former bounds (200,000 and 100,000)
allowed."""

from __future__ import annotations

import gc
import tracemalloc

from activities import shared_limits as sl
from activities.config_source import load_config_dir
from tests.support.servers import EXAMPLES


def test_lease_key_caches_stay_within_their_bounds_under_session_churn() -> None:
    cfg = load_config_dir(EXAMPLES, env={})
    limits = sl.SharedLimits(None, cfg)  # type: ignore[arg-type]  # `_units` reads no store
    rule = next(r for r in cfg.rate_limits if r.scope == "session")
    sl._KEYS.clear()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        peak_len = (0, 0)
        for i in range(60_000):
            key = (rule.id, f"{i:08d}" + "s" * 248, 1796083200.0)
            (lease, _kind), *_ = limits._units(key)
            assert lease == f"rtok|1796083200|{rule.id}|{key[1]}"
            peak_len = max(peak_len, (len(sl._KEYS), len(limits._unit_cache)))
        gc.collect()
        held_mb = (tracemalloc.get_traced_memory()[0] - before) / 1e6
    finally:
        tracemalloc.stop()
        sl._KEYS.clear()
    assert peak_len[0] <= sl.MAX_LEASE_KEYS and peak_len[1] <= sl.MAX_UNIT_CACHE, peak_len
    assert sl.MAX_LEASE_KEYS <= 20_000 and sl.MAX_UNIT_CACHE <= 20_000
    assert held_mb < 25, held_mb
