"""What the routes read (and the job submission they write), on a session: one module per
resource. Each raises ``api.http.errors.NotFound`` or ``Refused``, which ``main.py`` answers."""
