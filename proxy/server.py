"""Running the proxy: uvicorn with httptools and uvloop (chosen by measurement, see benchmarks/)."""

from __future__ import annotations

import logging
from pathlib import Path

import uvicorn

from activities.config_source import load_config_dir
from activities.gateway import Gateway
from activities.tracing import configure_tracing
from proxy.app import ProxyApp


def make_app(config_dir: Path, ledger_url: str, journal_dir: Path) -> ProxyApp:
    config = load_config_dir(config_dir)  # fail fast, before binding the port

    async def opener() -> Gateway:
        return await Gateway.open(
            config, ledger_url, journal_dir, path="proxy", config_dir=config_dir
        )

    return ProxyApp(opener=opener)


def uvicorn_config(app: ProxyApp, host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level="warning",
        timeout_keep_alive=75,
        backlog=2048,
        # Callers reach the proxy directly; rewriting client addresses from headers is work
        # we don't need on every request, and Server/Date headers are optional in HTTP/1.1.
        proxy_headers=False,
        server_header=False,
        date_header=False,
    )


def run(config_dir: Path, ledger_url: str, journal_dir: Path, host: str, port: int) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    configure_tracing("governor-proxy")
    app = make_app(config_dir, ledger_url, journal_dir)
    uvicorn.Server(uvicorn_config(app, host, port)).run()
