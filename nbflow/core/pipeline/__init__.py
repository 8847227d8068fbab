"""The graph a user builds: tasks, their dependencies, sub-pipelines, and the default-pipeline API."""
