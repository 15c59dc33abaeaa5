"""Cheap checks of a request's inputs before anything parses or validates them (the ``Guard``
runs them): a JSON body's nesting depth and member count from one linear scan of its bytes, and
NUL characters in the body's strings, the query string and the path. No field holds a NUL
(PostgreSQL's text refuses it, a file path cannot carry it), so each is refused naming where it
is; a body nested thousands deep or holding 100,000 keys never reaches the parser, the
validation, or the 422 that would echo it.

Each check returns a ``Problem`` (the HTTP status and what the client reads) or None.
"""

from __future__ import annotations

import json
import re
from array import array
from dataclasses import dataclass
from itertools import accumulate
from typing import Any
from urllib.parse import parse_qsl

# A JSON string, its closing quote optional: a match never fails, so one pass is linear even
# over an unterminated string full of escapes (which the parser then refuses).
STRING = re.compile(rb'"(?:[^"\\]|\\.)*"?', re.DOTALL)
# '[' and '{' as +1, ']' and '}' as -1 (a signed byte), all else deleted
OPENS, CLOSES = b"[{", b"]}"
KEEP = OPENS + CLOSES
STEPS = bytes.maketrans(KEEP, b"\x01\x01\xff\xff")
NOT_STRUCTURE = bytes(b for b in range(256) if b not in KEEP)
NUL_ESCAPE = b"\\u0000"


@dataclass(frozen=True)
class Problem:
    status: int
    detail: str | list[dict[str, Any]]


def field_problem(loc: list[str | int], msg: str, status: int = 422) -> Problem:
    """One field's problem, shaped as FastAPI's 422 (``detail``: a list naming each ``loc``)."""
    return Problem(status, [{"type": "value_error", "loc": loc, "msg": msg}])


def json_problem(body: bytes, *, max_depth: int, max_members: int) -> Problem | None:
    """The depth, the member count and NUL of a JSON body, read from its bytes (at most about
    0.1 s for 1 MiB made to be slow; a body with fewer commas and brackets in all than the limits
    skips the scan)."""
    opens = body.count(b"[") + body.count(b"{")
    if body.count(b",") < max_members and opens <= max_depth:
        return _nul_in(body) if NUL_ESCAPE in body else None
    structure = STRING.sub(b'""', body)
    members = structure.count(b",") + 1
    if members > max_members:
        return Problem(
            413,
            f"body: the JSON holds more than {max_members} members (object keys and array "
            "items in all)",
        )
    steps = array("b", structure.translate(STEPS, NOT_STRUCTURE))
    if max(accumulate(steps), default=0) > max_depth:
        return field_problem(
            ["body"], f"the JSON is nested more than {max_depth} arrays or objects deep"
        )
    if NUL_ESCAPE in body:
        return _nul_in(body)
    return None


def _nul_in(body: bytes) -> Problem | None:
    """Where a string of the body holds a NUL (the body's depth and size are bounded by now)."""
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return None  # FastAPI names what is wrong with it
    stack: list[tuple[list[str | int], Any]] = [(["body"], value)]
    while stack:
        loc, node = stack.pop()
        if isinstance(node, str) and "\x00" in node:
            return field_problem(loc, "a NUL character (\\u0000) is not allowed in a string")
        if isinstance(node, dict):
            for key, item in node.items():
                if "\x00" in key:
                    return field_problem([*loc, key], "a NUL character is not allowed in a key")
                stack.append(([*loc, key], item))
        elif isinstance(node, list):
            stack.extend(([*loc, i], item) for i, item in enumerate(node))
    return None


def query_problem(query_string: bytes, path: str) -> Problem | None:
    """NUL in the path or in a query parameter's name or value (``%00`` decoded)."""
    if "\x00" in path:
        return field_problem(["path"], "a NUL character is not allowed in the path")
    if b"%00" not in query_string and b"\x00" not in query_string:
        return None
    for key, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        if "\x00" in key or "\x00" in value:
            return field_problem(
                ["query", key], "a NUL character is not allowed in a query parameter"
            )
    return None
