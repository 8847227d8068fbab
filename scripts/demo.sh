#!/usr/bin/env bash
# The README's demo (`make demo`, after scripts/setup.sh): the example pipeline
# notebook (its story includes a cached rerun and an edit), a parameterized
# notebook run twice (the second run is served from the home's shared cache),
# then the daily ETL notebook scheduled as a job and backfilled over three days.
# State goes to ./.nbflow-demo (or $NBFLOW_HOME), started fresh each time.
set -euo pipefail
cd "$(dirname "$0")/.."

export NBFLOW_HOME="${NBFLOW_HOME:-$PWD/.nbflow-demo}"
rm -rf "$NBFLOW_HOME"
nbflow() { .venv/bin/nbflow "$@"; }
# Bold step titles on a terminal only: a log file gets no raw escape codes.
if [ -t 1 ]; then bold=$'\033[1m' plain=$'\033[0m'; else bold="" plain=""; fi
step() { printf '\n%s== %s%s\n' "$bold" "$*" "$plain"; }

step "1. The example pipeline notebook: extract -> clean -> enrich -> load, an edit, a rerun"
nbflow run notebooks/quickstart.ipynb -o "$NBFLOW_HOME/quickstart-first.ipynb"

step "2. A parameterized notebook, twice: the second run is served from the home's shared cache"
nbflow run notebooks/shared_cache.ipynb -p rate 0.25 -o "$NBFLOW_HOME/shared-first.ipynb"
nbflow run notebooks/shared_cache.ipynb -p rate 0.25 -o "$NBFLOW_HOME/shared-again.ipynb"

step "3. Schedule the daily ETL notebook at 02:00 Berlin time, the logical date as its parameter"
nbflow schedule add demo-etl notebooks/daily_etl.ipynb --cron "0 2 * * *" --tz Europe/Berlin \
    -p date "{{ ds }}" --retries 2 --retry-delay 30 --timeout 600
nbflow schedule show demo-etl

step "4. Backfill three days (one run per tick, in the foreground)"
nbflow backfill demo-etl --start 2024-01-01 --end 2024-01-03

step "5. Backfill again: ticks that already succeeded are skipped"
nbflow backfill demo-etl --start 2024-01-01 --end 2024-01-03

step "6. Run history"
nbflow runs demo-etl

step "7. Everything that ran, in the history (pipeline, notebook and job runs, linked)"
nbflow history --limit 30

printf '\nOutput notebooks are under %s/runs; open them in Jupyter to read each run.\n' "$NBFLOW_HOME"
# The demo ran .venv/bin/nbflow; a new shell has no `nbflow` on its PATH until .venv is active.
printf '\nThe nbflow command is in .venv/bin. To use it as `nbflow ...`:\n'
printf '    source .venv/bin/activate\n'
printf 'or call it as .venv/bin/nbflow. This demo kept its state in %s:\n' "$NBFLOW_HOME"
printf '    NBFLOW_HOME=%s .venv/bin/nbflow runs demo-etl\n' "$NBFLOW_HOME"
printf '\nTo see it all in the browser, open the dashboard on this home:\n'
printf '    .venv/bin/nbflow ui --home %s\n' "$NBFLOW_HOME"
printf 'and open the URL it prints: http://127.0.0.1:8765/nbflow/?token=<a fresh token each time>\n'
printf '(inside JupyterLab the same dashboard is at http://127.0.0.1:8888/nbflow/)\n'

