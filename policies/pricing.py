"""Cost of a call from the catalog, per model version.

A version entry overrides the model's prices field by field. Cache prices default to the input
price (of that version) when the catalog leaves them out: we never guess a discount the provider
may not give.
"""

from __future__ import annotations

from policies.config.models import ModelPrice


def rates(price: ModelPrice, version: str | None) -> tuple[float, float, float, float]:
    inp, out = price.input_per_mtok, price.output_per_mtok
    cr, cw = price.cache_read_per_mtok, price.cache_write_per_mtok
    if version:
        for v in price.versions:
            if v.version == version:
                inp = v.input_per_mtok if v.input_per_mtok is not None else inp
                out = v.output_per_mtok if v.output_per_mtok is not None else out
                cr = v.cache_read_per_mtok if v.cache_read_per_mtok is not None else cr
                cw = v.cache_write_per_mtok if v.cache_write_per_mtok is not None else cw
                break
    return inp, out, inp if cr is None else cr, inp if cw is None else cw


def call_cost(
    price: ModelPrice,
    version: str | None,
    input_tokens: int,
    output_tokens: int,
    cache_read_tokens: int = 0,
    cache_write_tokens: int = 0,
) -> float:
    inp, out, cr, cw = rates(price, version)
    return (
        input_tokens * inp + output_tokens * out + cache_read_tokens * cr + cache_write_tokens * cw
    ) / 1_000_000


def max_output_tokens(price: ModelPrice | None, version: str | None = None) -> int | None:
    """The model's (or that version's) output maximum from the catalog, if it has one."""
    if price is None:
        return None
    if version:
        for v in price.versions:
            if v.version == version and v.max_output_tokens is not None:
                return v.max_output_tokens
    return price.max_output_tokens
