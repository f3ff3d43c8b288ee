# Shared by scripts/run and scripts/test: make sure .venv exists and has what the requirement files list.
# Usage: . scripts/_venv.sh [extra requirement files...]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "Creating $VENV ..." >&2
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip >&2 || true
fi
REQS=("$ROOT/requirements.txt" "$@")
STAMP="$VENV/.tl_app-installed"
WANT="$(cat "${REQS[@]}" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || ! grep -qx "$WANT" "$STAMP"; then
  echo "Installing dependencies into $VENV (the first time takes a few minutes) ..." >&2
  args=()
  for r in "${REQS[@]}"; do args+=(-r "$r"); done
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${args[@]}" >&2
  echo "$WANT" >> "$STAMP"
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export GRADIO_ANALYTICS_ENABLED="${GRADIO_ANALYTICS_ENABLED:-False}"
