# The two commands of the README. Each does all set-up first (scripts/setup.sh).
.PHONY: demo test setup bench lint

setup:
	@./scripts/setup.sh

demo: setup
	@./scripts/demo.sh

test: setup
	.venv/bin/python -m pytest

bench: setup
	.venv/bin/python benchmarks/run_all.py

lint: setup
	.venv/bin/ruff check nbflow tests benchmarks
	.venv/bin/ruff format --check nbflow tests benchmarks
