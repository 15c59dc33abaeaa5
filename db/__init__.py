"""Persistence, for ``api`` only: the tables (``models``: jobs, stages, stage locks, epoch metrics,
artifacts, architectures with their stored Pareto fronts, sweeps), the database and its one
session context manager (``session``), and the Alembic migrations (``migrations``)."""
