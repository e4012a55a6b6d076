"""`governor`: run the proxy, the simulator or everything; check config; on-call commands."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

DEFAULT_DATA = Path(os.environ.get("GOVERNOR_DATA_DIR", ".governor"))
DEFAULT_CONFIG = Path(os.environ.get("GOVERNOR_CONFIG_DIR", "examples/config"))


def _ledger_url(data_dir: Path, ledger: str | None) -> str:
    return ledger or os.environ.get("GOVERNOR_LEDGER_URL") or f"sqlite:///{data_dir / 'ledger.db'}"


@click.group()
def main() -> None:
    """Governor: governance for AI agent sessions (proxy, workflows, control room)."""


@main.command()
@click.option(
    "--config",
    "config_dir",
    type=click.Path(path_type=Path),
    default=DEFAULT_CONFIG,
    show_default=True,
    help="config directory (*.yaml)",
)
@click.option("--port", type=int, default=8080, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=DEFAULT_DATA,
    show_default=True,
    help="ledger file and journal live here",
)
@click.option("--ledger", default=None, help="ledger URL (sqlite:///… or postgresql://…)")
@click.option(
    "--replica",
    default="proxy",
    show_default=True,
    help="replica name: each replica keeps its own journal directory",
)
def proxy(
    config_dir: Path, port: int, host: str, data_dir: Path, ledger: str | None, replica: str
) -> None:
    """Run the governed proxy alone."""
    from policies.config.yamlsource import ConfigErrors
    from proxy.server import run

    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        run(config_dir, _ledger_url(data_dir, ledger), data_dir / f"journal-{replica}", host, port)
    except ConfigErrors as exc:
        _print_config_errors(exc)
        sys.exit(2)


@main.command()
@click.option("--port", type=int, default=8790, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
def sim(port: int, host: str) -> None:
    """Run the SIMULATED LLM provider (OpenAI + Anthropic wire protocols)."""
    from simulator.server import main as sim_main

    sim_main(port=port, host=host)


@main.group()
def config() -> None:
    """Config directory commands."""


@config.command("check")
@click.argument("directory", type=click.Path(path_type=Path))
def config_check(directory: Path) -> None:
    """Validate every file of DIRECTORY; print each error with file, line and field."""
    from activities.config_source import load_config_dir
    from policies.config.yamlsource import ConfigErrors

    try:
        cfg = load_config_dir(directory)
    except ConfigErrors as exc:
        _print_config_errors(exc)
        sys.exit(1)
    click.echo(
        f"OK: {len(cfg.sources)} file(s); virtual models: "
        f"{', '.join(sorted(cfg.virtual_models)) or '-'}; {len(cfg.rate_limits)} rate "
        f"limit(s), {len(cfg.budgets)} budget(s), {len(cfg.keys_by_hash)} key(s), "
        f"{len(cfg.prices)} priced model(s)"
    )


def _print_config_errors(exc: BaseException) -> None:
    errors = getattr(exc, "errors", [exc])
    click.echo(f"{len(errors)} config error(s):", err=True)
    for e in errors:
        click.echo(f"  {e}", err=True)


@main.group()
def keys() -> None:
    """API key commands."""


@keys.command("hash")
@click.argument("secret")
def keys_hash(secret: str) -> None:
    """Print the hash to store in a gateway-api-keys file for SECRET."""
    from activities.gateway import hash_key

    click.echo(hash_key(secret))


if __name__ == "__main__":
    main()
