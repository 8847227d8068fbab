#!/usr/bin/env bash
# Set up everything nbflow needs on a fresh Debian/Ubuntu machine, idempotently:
# system packages (Graphviz's `dot`; Chromium for the browser test), a virtual
# environment in .venv with nbflow and its dev extras, and a Jupyter kernel
# inside that environment. Re-running it is cheap: each step checks first.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v dot >/dev/null 2>&1 || need_apt+=(graphviz)
if [ "${NBFLOW_SKIP_BROWSER:-0}" != "1" ]; then
  command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "setup: installing ${need_apt[*]} with apt-get" >&2
    # apt can fail for a moment (a mirror, another apt holding the lock): try three times.
    for attempt in 1 2 3; do
      if $SUDO apt-get update -qq \
        && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null; then
        break
      fi
      [ "$attempt" -eq 3 ] && { echo "setup: apt-get failed three times" >&2; exit 1; }
      echo "setup: apt-get failed (attempt $attempt); retrying in 10 s" >&2
      sleep 10
    done
  else
    echo "setup: please install ${need_apt[*]} (e.g. 'brew install graphviz' or 'conda install -c conda-forge graphviz')" >&2
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv" >&2
  "$PY" -m venv .venv
fi
stamp=.venv/.nbflow-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing nbflow and its dev extras into .venv" >&2
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[dev]"
  .venv/bin/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (nbflow)" >/dev/null
  echo "$want" > "$stamp"
fi
