"""nbflow: turn Jupyter notebooks into cached, scheduled, parameterized pipelines."""

__version__ = "0.1.0"
