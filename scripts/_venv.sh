# Shared by scripts/up and scripts/test: make .venv with everything pinned in pyproject.toml.
# Re-installs only when pyproject.toml, setup.py or the C checks it builds changed since the last
# install (the editable install builds policies/guardrails/_checks_c next to its source).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
STAMP="$VENV/.governor-installed"
if [ ! -f "$STAMP" ] || [ "$ROOT/pyproject.toml" -nt "$STAMP" ] || [ "$ROOT/setup.py" -nt "$STAMP" ] \
  || [ "$ROOT/policies/guardrails/_checks_c.c" -nt "$STAMP" ]; then
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -e "$ROOT[dev]"
  # The C checks are optional (a pure-Python fallback gives the same answers): without a
  # compiler the install is done; with one, a failed build is retried by the next run.
  if (cd "$ROOT" && "$VENV/bin/python" -c "import policies.guardrails._checks_c") 2>/dev/null \
    || ! command -v "${CC:-cc}" >/dev/null; then
    touch "$STAMP"
  else
    echo "warning: the C guardrail checks did not build; the Python fallback runs (slower)" >&2
  fi
fi
export PATH="$VENV/bin:$PATH"
cd "$ROOT"
