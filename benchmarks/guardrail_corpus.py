"""Guardrail detectors measured on labelled data kept by other projects (gitleaks, detect-secrets,
trufflehog, Presidio, garak, BIPIA ...): recall per kind, precision on near misses, false
positives per 10k lines of ordinary text, scan time per KB.

The corpus is not part of this repository (its rows carry their sources' licences); pass the
directory that holds it. This wraps the corpus's own `run.py`, which calls Governor's public
`policies.guardrails.scan` one detector at a time, so the table is the one the corpus defines.

    .venv/bin/python benchmarks/guardrail_corpus.py ../shared/guardrail-corpus [--show 10]
        [--json numbers.json] [--no-trufflehog] [--no-timing]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("corpus", type=Path, help="corpus directory (run.py, data/)")
    args, rest = ap.parse_known_args()
    runner = args.corpus / "run.py"
    if not runner.is_file() or not (args.corpus / "data").is_dir():
        ap.error(f"{args.corpus} does not hold run.py and data/")
    spec = importlib.util.spec_from_file_location("guardrail_corpus_run", runner)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.argv = [str(runner), str(REPO), "--data", str(args.corpus / "data"), *rest]
    module.main()


if __name__ == "__main__":
    main()
