"""The refusals a service module raises and ``main.py`` turns into HTTP answers."""

from __future__ import annotations


class NotFound(LookupError):
    """No such job, sweep or artifact: a 404."""


class Refused(ValueError):
    """The request cannot be carried out as asked: a 400."""
