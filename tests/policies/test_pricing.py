"""Call cost from the catalog: per-version overrides, cache prices and their defaults."""

from __future__ import annotations

from typing import Any

import pytest

from policies.config.models import ModelPrice
from policies.pricing import call_cost, rates

M = 1_000_000


def price(**kw: Any) -> ModelPrice:
    data: dict[str, Any] = {"model": "m", "input_per_mtok": 3.0, "output_per_mtok": 15.0}
    data.update(kw)
    return ModelPrice.model_validate(data)


def test_input_and_output_are_priced_per_million_tokens() -> None:
    assert call_cost(price(), None, M, M) == pytest.approx(18.0)
    assert call_cost(price(), None, 1000, 200) == pytest.approx(0.003 + 0.003)


def test_zero_tokens_cost_nothing() -> None:
    assert call_cost(price(), None, 0, 0) == 0.0


def test_cache_read_and_write_use_their_own_prices() -> None:
    p = price(cache_read_per_mtok=0.3, cache_write_per_mtok=3.75)
    assert call_cost(p, None, 0, 0, cache_read_tokens=M) == pytest.approx(0.3)
    assert call_cost(p, None, 0, 0, cache_write_tokens=M) == pytest.approx(3.75)
    assert call_cost(p, None, M, M, M, M) == pytest.approx(3 + 15 + 0.3 + 3.75)


def test_absent_cache_prices_default_to_the_input_price() -> None:
    assert rates(price(), None) == (3.0, 15.0, 3.0, 3.0)
    assert call_cost(price(), None, 0, 0, M, M) == pytest.approx(6.0)


def test_one_absent_cache_price_defaults_alone() -> None:
    assert rates(price(cache_read_per_mtok=0.075), None) == (3.0, 15.0, 0.075, 3.0)


def test_version_entry_overrides_only_the_fields_it_names() -> None:
    p = price(
        cache_read_per_mtok=0.3,
        versions=[{"version": "m-2026", "output_per_mtok": 20.0}],
    )
    assert rates(p, "m-2026") == (3.0, 20.0, 0.3, 3.0)


def test_version_entry_can_override_every_price() -> None:
    p = price(
        cache_read_per_mtok=0.3,
        cache_write_per_mtok=3.75,
        versions=[
            {
                "version": "v2",
                "input_per_mtok": 4,
                "output_per_mtok": 16,
                "cache_read_per_mtok": 0.4,
                "cache_write_per_mtok": 5,
            }
        ],
    )
    assert rates(p, "v2") == (4, 16, 0.4, 5)
    assert call_cost(p, "v2", M, M, M, M) == pytest.approx(4 + 16 + 0.4 + 5)


def test_the_matching_version_is_used_among_several() -> None:
    p = price(
        versions=[{"version": "a", "input_per_mtok": 1}, {"version": "b", "input_per_mtok": 2}]
    )
    assert rates(p, "b")[0] == 2
    assert rates(p, "a")[0] == 1


@pytest.mark.parametrize("version", [None, "", "unknown-version"])
def test_no_or_unknown_version_uses_the_model_prices(version: str | None) -> None:
    p = price(versions=[{"version": "v2", "input_per_mtok": 99}])
    assert rates(p, version) == (3.0, 15.0, 3.0, 3.0)


def test_version_with_only_a_tokenizer_note_costs_the_same_as_the_model() -> None:
    p = price(versions=[{"version": "v2", "tokenizer": "opus-4.7"}])
    assert call_cost(p, "v2", 1234, 567, 89, 10) == call_cost(p, None, 1234, 567, 89, 10)


def test_absent_cache_prices_default_to_the_versions_input_price() -> None:
    p = price(versions=[{"version": "v2", "input_per_mtok": 6.0}])
    assert rates(p, "v2") == (6.0, 15.0, 6.0, 6.0)


def test_max_output_tokens_comes_from_the_version_then_the_model() -> None:
    from policies.config.models import ModelPrice, VersionPrice
    from policies.pricing import max_output_tokens

    p = ModelPrice(model="m", input_per_mtok=1, output_per_mtok=2, max_output_tokens=64000,
                   versions=[VersionPrice(version="m-2", max_output_tokens=128000),
                             VersionPrice(version="m-1")])
    assert max_output_tokens(p) == 64000
    assert max_output_tokens(p, "m-2") == 128000
    assert max_output_tokens(p, "m-1") == 64000
    assert max_output_tokens(None) is None
    assert max_output_tokens(ModelPrice(model="x", input_per_mtok=1, output_per_mtok=1)) is None
