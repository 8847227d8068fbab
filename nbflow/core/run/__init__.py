"""Running a plan: the runner, which executes stale tasks and stores results, and mapped-task expansion."""
