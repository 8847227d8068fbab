"""Drawing a pipeline with Graphviz and recolouring it; no IPython, used by the widget, the CLI and the dashboard."""
