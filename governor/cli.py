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
    from audit.archive import ArchiveConfigError
    from policies.config.yamlsource import ConfigErrors
    from proxy.server import run

    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        run(config_dir, _ledger_url(data_dir, ledger), data_dir / f"journal-{replica}", host, port)
    except ConfigErrors as exc:
        _print_config_errors(exc)
        sys.exit(2)
    except ArchiveConfigError as exc:
        click.echo(f"governor proxy: archive: {exc}", err=True)
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
    from policies.alerts import undefined_targets

    for w in undefined_targets(cfg.extra, cfg.budgets):
        click.echo(f"warning: {w}", err=True)
    click.echo(
        f"OK: {len(cfg.sources)} file(s); virtual models: "
        f"{', '.join(sorted(cfg.virtual_models)) or '-'}; {len(cfg.rate_limits)} rate "
        f"limit(s), {len(cfg.budgets)} budget(s), {len(cfg.keys_by_hash)} key(s), "
        f"{len(cfg.prices)} priced model(s), {_alert_rules(cfg)} alert rule(s)"
    )


def _alert_rules(cfg: object) -> int:
    from policies.alerts import KIND

    return sum(len(getattr(d, "alerts", ())) for d in getattr(cfg, "extra", {}).get(KIND, ()))


def _print_config_errors(exc: BaseException) -> None:
    errors = getattr(exc, "errors", [exc])
    click.echo(f"{len(errors)} config error(s):", err=True)
    for e in errors:
        click.echo(f"  {e}", err=True)


@main.command()
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=DEFAULT_DATA,
    show_default=True,
    help="ledger, journals and the dev server's SQLite file live here",
)
@click.option(
    "--config",
    "config_dir",
    type=click.Path(path_type=Path),
    default=DEFAULT_CONFIG,
    show_default=True,
    help="config directory (*.yaml)",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="proxy address")
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True)
@click.option(
    "--temporal-address",
    envvar="TEMPORAL_ADDRESS",
    default=None,
    help="an existing Temporal cluster (host:port); default: start the dev server",
)
@click.option("--namespace", envvar="TEMPORAL_NAMESPACE", default="default", show_default=True)
@click.option("--tls-cert", envvar="TEMPORAL_TLS_CERT", type=click.Path(path_type=Path))
@click.option("--tls-key", envvar="TEMPORAL_TLS_KEY", type=click.Path(path_type=Path))
@click.option("--temporal-port", type=click.IntRange(1, 65535), default=7233, show_default=True)
@click.option("--ui-port", type=click.IntRange(1, 65535), default=8233, show_default=True)
@click.option(
    "--sim-url",
    envvar="GOVERNOR_SIM_URL",
    default="http://127.0.0.1:8790",
    show_default=True,
    help="where the SIMULATED provider listens (started when providers point at it)",
)
@click.option(
    "--ledger",
    envvar="GOVERNOR_LEDGER_URL",
    default=None,
    help="ledger database URL (postgresql://… shared with other replicas); default: "
    "--data-dir's ledger.db",
)
def up(
    data_dir: Path,
    config_dir: Path,
    host: str,
    port: int,
    temporal_address: str | None,
    namespace: str,
    tls_cert: Path | None,
    tls_key: Path | None,
    temporal_port: int,
    ui_port: int,
    sim_url: str,
    ledger: str | None,
) -> None:
    """Start everything on this machine: Temporal dev server, worker, proxy, simulator."""
    from governor.up import UpError, UpOptions
    from governor.up import up as run_up
    from policies.config.yamlsource import ConfigErrors

    opts = UpOptions(
        data_dir=data_dir,
        config_dir=config_dir,
        host=host,
        port=port,
        temporal_address=temporal_address or None,
        namespace=namespace,
        tls_cert=tls_cert,
        tls_key=tls_key,
        temporal_port=temporal_port,
        ui_port=ui_port,
        sim_url=sim_url,
        ledger=ledger or None,
    )
    code = 0
    try:
        run_up(opts)
    except ConfigErrors as exc:
        _print_config_errors(exc)
        code = 2
    except UpError as exc:
        click.echo(f"error: {exc}", err=True)
        code = 1
    except KeyboardInterrupt:
        pass
    # Everything is stopped and flushed; skip interpreter teardown, which Temporal's Rust
    # runtime threads can abort (temporalio/sdk-python#300).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _register_sessions() -> None:
    from governor.alerts_cli import alerts, overrides
    from governor.audit_cli import audit
    from governor.report_cli import report
    from governor.sessions_cli import sessions

    main.add_command(report)
    main.add_command(sessions)
    main.add_command(alerts)
    main.add_command(overrides)
    main.add_command(audit)


_register_sessions()


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
