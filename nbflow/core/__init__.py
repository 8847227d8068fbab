"""The engine: tasks, pipeline graph, fingerprints, cache store, planner, runner, executors, events.

Nothing in this package imports IPython, ipywidgets or graphviz; scripts,
papermill jobs and workers load only this.
"""
