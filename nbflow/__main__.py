"""`python -m nbflow`: the `nbflow` command, for when its script is not on PATH."""

from nbflow.cli import main

if __name__ == "__main__":
    main()
