"""Reservation estimates: caller's cap first, cost at the dearest target a call may land on."""

from __future__ import annotations

import pytest

from policies.config.models import ModelPrice, Target
from policies.estimates import caller_max_tokens, estimate_cost, input_tokens_estimate


@pytest.mark.parametrize(
    ("body", "want"),
    [
        ({"max_tokens": 200}, 200),
        ({"max_completion_tokens": 300, "max_tokens": 200}, 300),
        ({"max_output_tokens": 64}, 64),
        ({}, None),
        ({"max_tokens": 0}, None),
        ({"max_tokens": True}, None),
        ({"max_tokens": "200"}, None),
        ({"max_tokens": -5}, None),
    ],
)
def test_caller_max_tokens_reads_each_protocols_cap_and_ignores_junk(body, want) -> None:
    assert caller_max_tokens(body) == want


def test_input_estimate_is_a_quarter_of_the_body_and_never_zero() -> None:
    assert input_tokens_estimate(4000) == 1000
    assert input_tokens_estimate(0) == 1


def test_cost_is_priced_at_the_dearest_target_and_version() -> None:
    prices = {
        "cheap": ModelPrice(model="cheap", input_per_mtok=1, output_per_mtok=2),
        "dear": ModelPrice.model_validate({
            "model": "dear", "input_per_mtok": 3, "output_per_mtok": 15,
            "versions": [{"version": "dear-2", "output_per_mtok": 20}]}),
    }
    t = [Target(provider="p", model="cheap"), Target(provider="p", model="dear"),
         Target(provider="p", model="unpriced")]
    assert estimate_cost(prices, t, 1000, 1000) == pytest.approx((3000 + 20000) / 1e6)
    assert estimate_cost(prices, t[:1], 1000, 1000) == pytest.approx(3000 / 1e6)
    assert estimate_cost(prices, t[2:], 1000, 1000) == 0.0
