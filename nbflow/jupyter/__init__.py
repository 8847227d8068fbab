"""The IPython extension: %%task and %nbflow magics, cell analysis, the live DAG widget."""
