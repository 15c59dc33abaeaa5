"""The ways in: the ``reskd`` command line (and later the HTTP service and its workers)."""
