"""The service around the library: ``runtime`` (the job queue on the database, workers, sweeps,
``reskd serve``'s worker pool and Ray dispatch), ``http`` (the FastAPI app under /v1 and its
dashboard), ``cli`` (the ``reskd`` command line, local and against a service) and ``client`` (the
HTTP client the command line uses, standing alone)."""
