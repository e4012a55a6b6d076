"""A real S3-compatible server for tests: moto in server mode, a subprocess on a free port."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx

from tests.support.servers import free_port

ACCESS_KEY = "governor-test"
SECRET_KEY = "governor-test-secret"
REGION = "us-east-1"


@dataclass(frozen=True)
class MotoS3:
    endpoint: str

    def create_bucket(self, name: str) -> None:
        r = httpx.put(f"{self.endpoint}/{name}", timeout=10)
        r.raise_for_status()

    def env(self) -> dict[str, str]:
        """Credentials the way a deployment gives them: the provider's variables."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": REGION,
        }


@contextmanager
def moto_server() -> Iterator[MotoS3]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{endpoint}/moto-api/", timeout=2)
                break
            except httpx.HTTPError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.05)
        yield MotoS3(endpoint)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
