"""Prefect flows and the `t2v` command line: thin wiring over `tasks`."""
