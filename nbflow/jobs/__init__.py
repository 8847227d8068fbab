"""Notebooks as jobs: papermill runs, parameters, recorded outputs, schedules, run history, scheduler, alerts."""
