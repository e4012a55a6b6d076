"""Email and Microsoft Teams targets delivered for real through Apprise, to servers on
loopback: an SMTP server (plain SMTP) and an HTTPS endpoint speaking as a Power Automate
workflow (Teams' incoming-webhook successor). Each message carries its idempotency key."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest

from alerts.notify import deliver
from simulator.server import SimServer
from tests.support.servers import InProcessProxy, make_config_dir
from tests.support.smtp import SmtpSink
from tests.support.webhook import WebhookReceiver


def _self_signed(tmp: Path) -> ssl.SSLContext:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    key, cert = tmp / "key.pem", tmp / "cert.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx


async def test_email_and_teams_targets_receive_the_alert_with_its_idempotency_key(
    tmp_path: Path,
) -> None:
    smtp = await SmtpSink().start()
    teams = await WebhookReceiver().start(ssl_context=_self_signed(tmp_path))
    mail_url = (f"mailto://127.0.0.1:{smtp.port}?from=governor@example.com"
                "&to=oncall@example.com")
    # A Power Automate workflow URL, pointed at the loopback endpoint (its certificate is
    # self-signed, hence verify=no; a real workflow host has a public certificate).
    teams_url = f"workflows://127.0.0.1:{teams.port}/wf-abc123/sig-def456?verify=no"
    cfg = make_config_dir(tmp_path / "config", {"zz-notify.yaml": (
        "type: gateway-notification-targets\ntargets:\n"
        f"  - {{name: mail, url: \"{mail_url}\"}}\n"
        f"  - {{name: teams, url: \"{teams_url}\"}}\n")})
    async with SimServer(port=0) as sim:
        p = await InProcessProxy(cfg, tmp_path, sim.base_url).start()
        try:
            assert p.gw is not None
            sent = await deliver(p.gw, "mail", "Governor alert secret_leaked",
                                 "secret_leaked (project=payments)", "alert-x/run-1:0:mail")
            assert sent.sent
            (msg,) = smtp.messages
            assert msg["To"] == "oncall@example.com"
            assert "secret_leaked" in msg["Subject"] and "alert-x/run-1:0:mail" in msg["Subject"]
            text = msg.get_payload(decode=True) if not msg.is_multipart() else \
                msg.get_payload(0).get_payload(decode=True)
            assert b"idempotency-key: alert-x/run-1:0:mail" in text

            sent = await deliver(p.gw, "teams", "Governor alert breaker_open",
                                 "breaker_open (target=openai/gpt-4o)", "alert-y/run-2:0:teams")
            assert sent.sent
            (got,) = teams.got
            assert "/workflows/wf-abc123/" in got.path
            card = str(got.body)
            assert "breaker_open" in card and "alert-y/run-2:0:teams" in card
            again = await deliver(p.gw, "teams", "t", "b", "alert-y/run-2:0:teams")
            assert not again.sent and len(teams.got) == 1  # once per key
        finally:
            await p.stop()
            await teams.stop()
            await smtp.stop()


SERVICE_HOSTS = ("hooks.slack.com", "events.pagerduty.com")


def _service_cert(tmp: Path) -> tuple[Path, ssl.SSLContext]:
    """A self-signed certificate for the services' host names, and a server context with it."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    key, cert = tmp / "svc-key.pem", tmp / "svc-cert.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "1", "-subj", "/CN=hooks.slack.com", "-addext",
                    "subjectAltName=" + ",".join(f"DNS:{h}" for h in SERVICE_HOSTS)],
                   check=True, capture_output=True, timeout=60)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return cert, ctx


async def test_slack_and_pagerduty_targets_post_to_their_services_with_the_idempotency_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Apprise unmodified posts to Slack's and PagerDuty's own HTTPS endpoints; only name
    resolution sends those two hosts to a loopback server whose certificate (for those names) is
    trusted through REQUESTS_CA_BUNDLE. PagerDuty's dedup_key is the idempotency key, so Events
    v2 itself folds a retried delivery into the same incident."""
    cert, ctx = _service_cert(tmp_path)
    svc = WebhookReceiver(status=200, port=443)  # Slack answers 200, PagerDuty 202
    try:
        await svc.start(ssl_context=ctx)
    except OSError as exc:
        pytest.skip(f"cannot listen on 127.0.0.1:443 ({exc})")
    real = socket.getaddrinfo

    def resolve(host: Any, *args: Any, **kw: Any) -> Any:
        return real("127.0.0.1" if host in SERVICE_HOSTS else host, *args, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    slack_url = "slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ/#ai-budget-alerts"
    pd_url = "pagerduty://integration-key@api-key"
    cfg = make_config_dir(tmp_path / "config", {"zz-notify.yaml": (
        "type: gateway-notification-targets\ntargets:\n"
        f"  - {{name: 'slack:#ai-budget-alerts', url: \"{slack_url}\"}}\n"
        f"  - {{name: pagerduty-primary, url: \"{pd_url}\"}}\n")})
    async with SimServer(port=0) as sim:
        p = await InProcessProxy(cfg, tmp_path, sim.base_url).start()
        try:
            assert p.gw is not None
            idem = "alert-secret_leaked,project=payments/run-1:0:pagerduty-primary"
            sent = await deliver(p.gw, "slack:#ai-budget-alerts", "Governor alert budget",
                                 "budget_near_ceiling (budget=b1)", "budget-b1@w-90:slack")
            assert sent.sent
            (got,) = svc.got
            assert got.path == "/services/T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ"
            assert "budget-b1@w-90:slack" in str(got.body) and "#ai-budget-alerts" in str(got.body)

            svc.status = 202
            sent = await deliver(p.gw, "pagerduty-primary", "Governor alert secret_leaked",
                                 "secret_leaked (project=payments)", idem)
            assert sent.sent
            got = svc.got[1]
            assert got.path == "/v2/enqueue" and isinstance(got.body, dict)
            assert got.body["routing_key"] == "integration-key"
            assert got.body["event_action"] == "trigger" and got.body["dedup_key"] == idem
            assert "secret_leaked" in got.body["payload"]["summary"]
            again = await deliver(p.gw, "pagerduty-primary", "t", "b", idem)
            assert not again.sent and len(svc.got) == 2  # once per key
        finally:
            await p.stop()
            await svc.stop()
