"""Reading a config directory from disk (the only I/O around the pure config builder)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from policies.config.gateway import GatewayConfig, build_config
from policies.config.yamlsource import ConfigError, ConfigErrors


def extra_kinds() -> dict[str, type]:
    """Config kinds owned by other modules (guardrails, alerts), registered where they exist."""
    kinds: dict[str, type] = {}
    try:
        from policies.guardrails.config import GuardrailsConfig

        kinds["gateway-guardrails-config"] = GuardrailsConfig
    except ImportError:  # pragma: no cover - guardrails not installed in this build
        pass
    from policies.alerts import KIND, TARGETS_KIND, AlertRulesConfig, NotificationTargetsConfig

    kinds[KIND] = AlertRulesConfig
    kinds[TARGETS_KIND] = NotificationTargetsConfig
    return kinds


def load_config_dir(directory: str | Path, env: Mapping[str, str] | None = None) -> GatewayConfig:
    """Every *.yaml / *.yml file of `directory`, in name order, validated as one config."""
    d = Path(directory)
    if not d.is_dir():
        raise ConfigErrors([ConfigError(str(d), None, None, "config directory does not exist")])
    files = sorted(p for p in d.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    if not files:
        raise ConfigErrors([ConfigError(str(d), None, None, "no *.yaml files in the directory")])
    texts = []
    for p in files:
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigErrors([ConfigError(str(p), None, None, f"cannot read: {exc}")]) from None
        texts.append((str(p), text))
    return build_config(texts, extra_kinds(), os.environ if env is None else env)
