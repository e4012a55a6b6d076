"""Email and Microsoft Teams targets delivered for real through Apprise, to servers on
loopback: an SMTP server (plain SMTP) and an HTTPS endpoint speaking as a Power Automate
workflow (Teams' incoming-webhook successor). Each message carries its idempotency key."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path

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
