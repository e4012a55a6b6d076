"""Reading a config directory from disk (the only I/O around the pure config builder)."""

from __future__ import annotations

import os
import re
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
    return kinds


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(text: str, file: str, env: Mapping[str, str]) -> str:
    """`${NAME}` / `${NAME:-default}` from the environment; an unset NAME without default is an
    error naming the line, never a silent empty string."""
    errors: list[ConfigError] = []

    def sub(m: re.Match[str]) -> str:
        val = env.get(m.group(1))
        if val is not None and val != "":
            return val
        if m.group(2) is not None:
            return m.group(2)
        line = text.count("\n", 0, m.start()) + 1
        errors.append(
            ConfigError(file, line, None, f"environment variable {m.group(1)} is not set")
        )
        return ""

    out = _VAR.sub(sub, text)
    if errors:
        raise ConfigErrors(errors)
    return out


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
        texts.append((str(p), expand_env(text, str(p), os.environ if env is None else env)))
    return build_config(texts, extra_kinds())
