"""Celery tasks, one module per queue; each task is a thin wrapper over the core."""
