"""The definitions: a task (a function, its inputs and options) and the graph tasks form.

Below everything that reads them: the planner, the runner and the `Pipeline` class.
"""
