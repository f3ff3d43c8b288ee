# Shared by scripts/run and scripts/test: make sure .venv exists and has what the requirement files list.
# Usage: . scripts/_venv.sh; tl_venv [extra requirement files...]
# (A function, so that the caller's own arguments, such as --port 8000, are never read as requirement files.)
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"

tl_venv() {
  local py="${PYTHON:-python3}"
  if [ ! -x "$VENV/bin/python" ]; then
    echo "Creating $VENV ..." >&2
    "$py" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip >&2 || true
  fi
  local reqs=("$ROOT/requirements.txt" "$@") r
  for r in "${reqs[@]}"; do
    if [ ! -f "$r" ]; then echo "No such requirements file: $r" >&2; return 2; fi
  done
  # The marker holds one line per set of requirement files already installed (run's and test's), each once.
  local stamp="$VENV/.tl_app-installed" want
  want="$(cat "${reqs[@]}" | sha256sum | cut -d' ' -f1)"
  if [ ! -f "$stamp" ] || ! grep -qx "$want" "$stamp"; then
    echo "Installing dependencies into $VENV (the first time takes a few minutes) ..." >&2
    local args=()
    for r in "${reqs[@]}"; do args+=(-r "$r"); done
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${args[@]}" >&2
    { [ -f "$stamp" ] && cat "$stamp"; echo "$want"; } | sort -u > "$stamp.tmp" && mv "$stamp.tmp" "$stamp"
  fi
  export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
  export GRADIO_ANALYTICS_ENABLED="${GRADIO_ANALYTICS_ENABLED:-False}"
}
