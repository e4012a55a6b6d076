"""Config errors name the file, the line and the field path, and all of them come at once."""

from __future__ import annotations

import textwrap

import pytest

from policies.config.gateway import GatewayConfig, build_config
from policies.config.yamlsource import ConfigError, ConfigErrors

PROVIDERS = """\
type: gateway-providers
providers:
  - {name: anthropic, protocol: anthropic, base_url: http://127.0.0.1:1}
  - {name: openai, protocol: openai, base_url: http://127.0.0.1:1}
"""

PRICING = """\
type: gateway-pricing-catalog
models:
  - {model: haiku, provider: anthropic, input_per_mtok: 1, output_per_mtok: 5}
  - {model: mini, provider: openai, input_per_mtok: 0.15, output_per_mtok: 0.6}
"""

BASE = [("providers.yaml", PROVIDERS), ("pricing.yaml", PRICING)]


def y(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def errors_of(*files: tuple[str, str]) -> list[ConfigError]:
    with pytest.raises(ConfigErrors) as exc:
        build_config([*BASE, *files])
    return exc.value.errors


def one_error(*files: tuple[str, str]) -> ConfigError:
    (err,) = errors_of(*files)
    return err


def where(e: ConfigError) -> tuple[str, int | None, str | None]:
    return (e.file, e.line, e.field)


def test_a_valid_config_builds() -> None:
    cfg = build_config(BASE)
    assert isinstance(cfg, GatewayConfig)
    assert set(cfg.providers) == {"anthropic", "openai"}
    assert cfg.sources == ("providers.yaml", "pricing.yaml")


# --- (a) YAML syntax -----------------------------------------------------------------------------


def test_yaml_syntax_error_names_file_and_line() -> None:
    text = y("""
        type: gateway-rate-limit-config
        name: rl
        rules:
          - id: a
            limit: {requests: 1, window: 1h]
          - id: b
        """)
    e = one_error(("rate-limits.yaml", text))
    assert (e.file, e.line) == ("rate-limits.yaml", 5)
    assert "invalid YAML" in e.message


def test_yaml_bad_indentation_is_located() -> None:
    text = y("""
        type: gateway-settings
        name: s
          store_text: true
        """)
    e = one_error(("gateway.yaml", text))
    assert (e.file, e.line) == ("gateway.yaml", 3)


def test_a_syntax_error_in_a_later_document_points_into_that_document() -> None:
    text = "type: gateway-settings\n---\ntype: gateway-settings\nname: [unclosed\n"
    e = one_error(("gateway.yaml", text))
    assert e.file == "gateway.yaml" and e.line is not None and e.line >= 4


# --- (b) wrong type deep in a list ---------------------------------------------------------------


def test_wrong_type_deep_in_a_list_names_line_and_path() -> None:
    text = y("""
        type: gateway-rate-limit-config
        name: rl
        rules:
          - id: a
            limit: {requests: 1, window: 1h}
          - id: b
            limit:
              requests: many
              window: 1h
        """)
    e = one_error(("rate-limits.yaml", text))
    assert where(e) == ("rate-limits.yaml", 8, "rules.1.limit.requests")
    assert "integer" in e.message


def test_bad_window_value_in_a_flow_mapping() -> None:
    text = y("""
        type: gateway-rate-limit-config
        name: rl
        rules:
          - {id: a, limit: {requests: 1, window: 1h}}
          - {id: b, limit: {requests: 1, window: 1 fortnight}}
        """)
    e = one_error(("rate-limits.yaml", text))
    assert where(e) == ("rate-limits.yaml", 5, "rules.1.limit.window")
    assert "30s, 5m, 1h" in e.message


def test_wrong_type_in_a_nested_budget_alert() -> None:
    text = y("""
        type: gateway-budget-config
        name: b
        budgets:
          - id: x
            ceiling_usd: 10
            window: monthly
            alerts:
              - {at_pct: 50}
              - at_pct: lots
        """)
    e = one_error(("budgets.yaml", text))
    assert where(e) == ("budgets.yaml", 9, "budgets.0.alerts.1.at_pct")


def test_limit_without_tokens_or_requests_points_at_the_limit() -> None:
    text = y("""
        type: gateway-rate-limit-config
        name: rl
        rules:
          - id: a
            limit:
              window: 1h
        """)
    e = one_error(("rate-limits.yaml", text))
    assert where(e) == ("rate-limits.yaml", 5, "rules.0.limit")
    assert "tokens or requests" in e.message


def test_bad_on_breach_action_is_located() -> None:
    text = y("""
        type: gateway-rate-limit-config
        name: rl
        rules:
          - id: a
            limit: {requests: 1, window: 1h}
            on_breach: shrug
        """)
    assert where(one_error(("rl.yaml", text))) == ("rl.yaml", 6, "rules.0.on_breach")


# --- (c) unknown field ---------------------------------------------------------------------------


def test_unknown_field_is_named_with_its_line() -> None:
    text = y("""
        type: gateway-rate-limit-config
        name: rl
        rules:
          - id: a
            limit:
              requests: 1
              window: 1h
              burst: 5
        """)
    e = one_error(("rate-limits.yaml", text))
    assert where(e) == ("rate-limits.yaml", 8, "rules.0.limit.burst")


def test_misspelt_top_level_field_is_named() -> None:
    text = "type: gateway-settings\nrequire_project_headers: true\n"
    assert where(one_error(("gateway.yaml", text))) == (
        "gateway.yaml",
        2,
        "require_project_headers",
    )


def test_unknown_metadata_header_in_when_is_located() -> None:
    text = y("""
        type: gateway-rate-limit-config
        name: rl
        rules:
          - id: a
            when:
              metadata: {X-TFY-Colour: blue}
            limit: {requests: 1, window: 1h}
        """)
    e = one_error(("rl.yaml", text))
    assert where(e) == ("rl.yaml", 6, "rules.0.when.metadata")
    assert "X-TFY-Colour" in e.message


# --- (d) unknown type ----------------------------------------------------------------------------


def test_unknown_type_names_the_type_line_and_the_known_types() -> None:
    text = "# budgets\n\nname: x\ntype: gateway-budget-confg\nbudgets: []\n"
    e = one_error(("budgets.yaml", text))
    assert where(e) == ("budgets.yaml", 4, "type")
    assert "gateway-budget-config" in e.message


def test_missing_type_is_an_error() -> None:
    e = one_error(("x.yaml", "name: x\nrules: []\n"))
    assert (e.file, e.field) == ("x.yaml", "type")


def test_a_document_that_is_not_a_mapping_is_an_error() -> None:
    e = one_error(("x.yaml", "type: gateway-settings\n---\n- a\n- b\n"))
    assert (e.file, e.line) == ("x.yaml", 3)
    assert "mapping" in e.message


# --- (e) routing cross-references ----------------------------------------------------------------


def test_routing_target_with_undefined_provider() -> None:
    text = y("""
        type: gateway-load-balancing-config
        name: vm
        rules:
          - id: a
            target: {provider: anthropic, model: haiku}
          - id: b
            target:
              provider: azure
              model: mini
        """)
    e = one_error(("routing.yaml", text))
    assert where(e) == ("routing.yaml", 8, "rules.1.target.provider")
    assert "'azure'" in e.message


def test_routing_fallback_with_unpriced_model() -> None:
    text = y("""
        type: gateway-load-balancing-config
        name: vm
        rules:
          - {id: a, target: {provider: anthropic, model: haiku}}
        fallbacks:
          - {provider: openai, model: mini}
          - {provider: openai, model: gpt-9}
        """)
    e = one_error(("routing.yaml", text))
    assert where(e) == ("routing.yaml", 7, "fallbacks.1.model")
    assert "'gpt-9'" in e.message


def test_routing_cheaper_target_is_checked_too() -> None:
    text = y("""
        type: gateway-load-balancing-config
        name: vm
        rules:
          - {id: a, target: {provider: anthropic, model: haiku}}
        cheaper:
          provider: nowhere
          model: nothing
        """)
    errs = errors_of(("routing.yaml", text))
    assert {where(e) for e in errs} == {
        ("routing.yaml", 6, "cheaper.provider"),
        ("routing.yaml", 7, "cheaper.model"),
    }


def test_fallback_to_naming_nothing_is_an_error_on_on_breach() -> None:
    text = y("""
        type: gateway-rate-limit-config
        name: rl
        rules:
          - id: a
            limit: {requests: 1, window: 1h}
            on_breach: fallback_to_ghost
        """)
    e = one_error(("rl.yaml", text))
    assert where(e) == ("rl.yaml", 6, "rules.0.on_breach")


def test_budget_on_exceed_naming_nothing_is_an_error() -> None:
    text = y("""
        type: gateway-budget-config
        name: b
        budgets:
          - id: x
            ceiling_usd: 10
            window: daily
            on_exceed: fallback_to_ghost
        """)
    assert where(one_error(("b.yaml", text))) == ("b.yaml", 7, "budgets.0.on_exceed")


def test_fallback_to_a_priced_model_that_cannot_be_routed_is_a_config_error() -> None:
    pricing = PRICING + "  - {model: orphan, input_per_mtok: 1, output_per_mtok: 1}\n"
    text = y("""
        type: gateway-rate-limit-config
        name: rl
        rules:
          - id: a
            limit: {requests: 1, window: 1h}
            on_breach: fallback_to_orphan
        """)
    with pytest.raises(ConfigErrors) as exc:
        build_config([("providers.yaml", PROVIDERS), ("pricing.yaml", pricing), ("rl.yaml", text)])
    assert where(exc.value.errors[0]) == ("rl.yaml", 6, "rules.0.on_breach")


# --- (f) duplicates ------------------------------------------------------------------------------


def test_duplicate_rate_limit_rule_id_across_files() -> None:
    first = y("""
        type: gateway-rate-limit-config
        name: a
        rules:
          - {id: r, limit: {requests: 1, window: 1h}}
        """)
    second = y("""
        type: gateway-rate-limit-config
        name: b
        rules:
          - {id: other, limit: {requests: 1, window: 1h}}
          - id: r
            limit: {requests: 2, window: 1h}
        """)
    e = one_error(("a.yaml", first), ("b.yaml", second))
    assert where(e) == ("b.yaml", 5, "rules.1.id")
    assert "'r'" in e.message


def test_duplicate_budget_id() -> None:
    text = y("""
        type: gateway-budget-config
        name: b
        budgets:
          - {id: x, ceiling_usd: 1, window: daily}
          - {id: x, ceiling_usd: 2, window: weekly}
        """)
    assert where(one_error(("b.yaml", text))) == ("b.yaml", 5, "budgets.1.id")


def test_duplicate_provider_and_priced_model() -> None:
    dup_prov = PROVIDERS + "  - {name: openai, protocol: openai, base_url: http://x}\n"
    dup_price = PRICING + "  - {model: haiku, input_per_mtok: 2, output_per_mtok: 2}\n"
    with pytest.raises(ConfigErrors) as exc:
        build_config([("providers.yaml", dup_prov), ("pricing.yaml", dup_price)])
    assert {where(e) for e in exc.value.errors} == {
        ("providers.yaml", 5, "providers.2.name"),
        ("pricing.yaml", 5, "models.2.model"),
    }


def test_duplicate_virtual_model_name_across_documents() -> None:
    vm = y("""
        type: gateway-load-balancing-config
        name: vm
        rules:
          - {id: a, target: {provider: openai, model: mini}}
        """)
    e = one_error(("r1.yaml", vm), ("r2.yaml", "# again\n" + vm))
    assert where(e) == ("r2.yaml", 3, "name")


def test_duplicate_api_key_id() -> None:
    h1, h2 = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    text = y(f"""
        type: gateway-api-keys
        keys:
          - {{id: k, hash: "{h1}", user: u, team: t}}
          - {{id: k, hash: "{h2}", user: v, team: t}}
        """)
    assert where(one_error(("keys.yaml", text))) == ("keys.yaml", 4, "keys.1.id")


def test_second_settings_document_is_an_error() -> None:
    e = one_error(("a.yaml", "type: gateway-settings\n"), ("b.yaml", "\ntype: gateway-settings\n"))
    assert where(e) == ("b.yaml", 2, "type")
    assert "a.yaml" in e.message


# --- all at once ---------------------------------------------------------------------------------


def test_errors_of_several_files_and_documents_are_reported_together() -> None:
    bad_yaml = "type: gateway-settings\nname: [oops\n"
    bad_type = "type: gateway-nonsense\n"
    two_docs = y("""
        type: gateway-settings
        store_text: maybe
        ---
        type: gateway-budget-config
        name: b
        budgets:
          - {id: x, ceiling_usd: -1, window: daily}
        """)
    errs = errors_of(("a.yaml", bad_yaml), ("b.yaml", bad_type), ("c.yaml", two_docs))
    got = {(e.file, e.line, e.field) for e in errs}
    assert ("b.yaml", 1, "type") in got
    assert ("c.yaml", 2, "store_text") in got
    assert ("c.yaml", 7, "budgets.0.ceiling_usd") in got
    assert [e.file for e in errs].count("a.yaml") == 1
    assert len(errs) == 4


def test_error_text_reads_file_line_field_message() -> None:
    e = ConfigError("rl.yaml", 7, "rules.0.id", "duplicate")
    assert str(e) == "rl.yaml:7: rules.0.id: duplicate"
    assert str(ConfigError("dir", None, None, "missing")) == "dir: missing"
    both = ConfigErrors([e, ConfigError("x.yaml", 1, None, "bad")])
    assert str(both).splitlines() == ["rl.yaml:7: rules.0.id: duplicate", "x.yaml:1: bad"]


def test_empty_documents_are_ignored() -> None:
    cfg = build_config([*BASE, ("empty.yaml", ""), ("comments.yaml", "# nothing\n---\n")])
    assert cfg.rate_limits == ()


def test_a_when_keys_selector_naming_an_unknown_key_id_is_located() -> None:
    keys = y("""
        type: gateway-api-keys
        keys:
          - {id: batch, hash: "sha256:%s", user: u, team: t}
        """ % ("0" * 64))
    rules = y("""
        type: gateway-rate-limit-config
        name: rl
        rules:
          - id: per-key
            when: {keys: [batch, nobody]}
            scope: key
            limit: {requests: 5, window: 1m}
        """)
    err = one_error(("keys.yaml", keys), ("rl.yaml", rules))
    assert err.file == "rl.yaml" and err.line == 5
    assert err.field == "rules.0.when.keys.1" and "'nobody'" in err.message
