"""The units of work as plain functions; nothing here imports Prefect."""
