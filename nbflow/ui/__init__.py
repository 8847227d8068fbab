"""The dashboard and the run reports: HTML views of the history and the cache (`report`, `notebook_html`)."""
