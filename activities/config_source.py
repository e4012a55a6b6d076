"""Reading a config directory from disk (the only I/O around the pure config builder)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from policies.config.gateway import GatewayConfig, build_config
from policies.config.yamlsource import ConfigError, ConfigErrors

MAX_FILE_BYTES = 1024 * 1024  # a config file larger than this is refused unread past it


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
    texts = [(str(p), read_config_file(p)) for p in files]
    return build_config(texts, extra_kinds(), os.environ if env is None else env)


def read_config_file(p: Path) -> str:
    """One config file's text: at most `MAX_FILE_BYTES` (1 MiB) read, never the whole of a
    larger file (one byte past the limit is read to tell), and UTF-8 only; either refusal names
    the file and line (the line of the limit, or of the first byte that is not UTF-8)."""
    try:
        with p.open("rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigErrors([ConfigError(str(p), None, None, f"cannot read: {exc}")]) from None
    if len(raw) > MAX_FILE_BYTES:
        line = raw.count(b"\n", 0, MAX_FILE_BYTES) + 1
        raise ConfigErrors([ConfigError(
            str(p), line, None, f"file larger than {MAX_FILE_BYTES} bytes; split it"
        )])  # fmt: skip
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigErrors(
            [
                ConfigError(
                    str(p),
                    line,
                    None,
                    f"not UTF-8: byte 0x{raw[exc.start]:02x} at byte {exc.start} ({exc.reason})",
                )
            ]
        ) from None
