"""Persistence of jobs, stages, artifacts and evaluated architectures."""
