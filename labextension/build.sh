#!/usr/bin/env bash
# Rebuild the JupyterLab extension (the dashboard's launcher card) into the Python package,
# nbflow/ui/labextensions/nbflow-dashboard/, and record the digest of its sources there.
# The build is committed, so neither CI nor an install needs Node; run this after any
# change to labextension/ and commit the result. Needs Node >= 20 and the project's
# .venv (JupyterLab); `npm ci` fetches the Node packages when node_modules is missing.
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(cd .. && pwd)
VENV=${VENV:-$ROOT/.venv}
export PATH="$VENV/bin:$PATH"
OUT=../nbflow/ui/labextensions/nbflow-dashboard

[ -d node_modules ] || npm ci --no-audit --no-fund
# A clean build: tsc's incremental state would skip emitting into a deleted lib/.
rm -rf lib tsconfig.tsbuildinfo "$OUT"
npx tsc
# The core package definition of the JupyterLab in the venv: the shared packages
# (singletons such as @jupyterlab/launcher) and their versions. Without it the builder
# looks the definition up on the network.
CORE=$(python -c 'import jupyterlab, pathlib; print(pathlib.Path(jupyterlab.__file__).parent / "staging" / "package.json")')
jupyter labextension build . --core-package-file="$CORE"
# How `jupyter labextension list` names the package that installed it.
cp install.json "$OUT/install.json"
python digest.py --write >/dev/null
echo "built $(cd "$OUT" && pwd) from sources $(cat "$OUT/sources.sha256")"
