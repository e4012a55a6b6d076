"""The real clients, installed from their package registries into `.governor/clients`.

npm packages (exact versions) with npm into `.governor/clients/node_modules`; Python packages
(exact versions) with pip into their own venv `.governor/clients/py`, so the main venv stays
lean. Each is installed once and reused while its pins are unchanged.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DIR = REPO / ".governor" / "clients"

# Pinned: the tier checks these exact programs. Claude Code and Codex ship native binaries as
# npm optional dependencies (no download outside the registry); the AI SDK runs on Node >= 18.
NPM = {
    "@anthropic-ai/claude-code": "2.1.332",
    "@openai/codex": "0.171.0",
    "ai": "6.0.326",
    "@ai-sdk/openai": "3.0.141",
    "zod": "4.6.7",
}
PIP = {"openai-agents": "0.24.0", "langchain-openai": "1.7.4"}


def _npm_installed() -> bool:
    for name, version in NPM.items():
        pkg = DIR / "node_modules" / name / "package.json"
        if not pkg.exists() or json.loads(pkg.read_text()).get("version") != version:
            return False
    return True


def install_npm() -> Path:
    DIR.mkdir(parents=True, exist_ok=True)
    if not _npm_installed():
        specs = [f"{n}@{v}" for n, v in NPM.items()]
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix", str(DIR),
                        *specs], check=True, capture_output=True, timeout=1200)
    return DIR / "node_modules"


def install_pip() -> Path:
    venv = DIR / "py"
    py = venv / "bin" / "python"
    stamp = venv / ".pins"
    want = json.dumps(PIP, sort_keys=True)
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    if not stamp.exists() or stamp.read_text() != want:
        subprocess.run([str(py), "-m", "pip", "install", "-q",
                        *[f"{n}=={v}" for n, v in PIP.items()]],
                       check=True, capture_output=True, timeout=1200)
        stamp.write_text(want)
    return py
