"""The project's benchmarks, each run as ``python -m benchmarks.NAME`` (``--help`` says what it
measures and its goal); what they share is in ``benchmarks.common``."""
