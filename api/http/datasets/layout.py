"""The names an upload may take. What an image folder is (its splits, its image suffixes, how a
class mismatch is shown) is ``distill.datasets.folders``'s, so the listing and an upload's checks
say it the same way."""

from __future__ import annotations

import re

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
NAME = re.compile(NAME_PATTERN)
