"""The keys ``reskd login`` keeps, one per service URL, in
``$XDG_CONFIG_HOME/reskd/credentials.json`` (``~/.config/reskd/`` without it): the file is its
owner's only (mode 0600, its folder 0700) and written to a temporary name, then renamed. It also
holds the URL signed in to last, which commands given no ``--url`` (and no ``$RESKD_URL``) use::

    {"url": "https://reskd.example.org",
     "keys": {"https://reskd.example.org": "rk_...", "http://127.0.0.1:8321": "rk_..."}}
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Stored", "forget", "load", "location", "save"]


@dataclass(frozen=True)
class Stored:
    """What the file holds: the URL signed in to last (None: none) and each URL's key."""

    url: str | None = None
    keys: dict[str, str] = field(default_factory=dict)

    def key_for(self, url: str) -> str | None:
        return self.keys.get(_normal(url))


def _normal(url: str) -> str:
    return url.rstrip("/")


def location() -> Path:
    """The credentials file (which may not exist)."""
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "reskd" / "credentials.json"


def load() -> Stored:
    """The stored keys; none when there is no file. A file that is not one raises a ValueError
    naming it (``reskd logout`` or removing it clears it)."""
    path = location()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return Stored()
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read the stored keys ({exc}); remove the file") from exc
    keys = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(keys, dict) or not all(isinstance(v, str) for v in keys.values()):
        raise ValueError(f"{path}: not a credentials file (no keys by URL); remove the file")
    url = data.get("url")
    return Stored(url if isinstance(url, str) else None, {_normal(k): v for k, v in keys.items()})


def save(url: str, key: str) -> Path:
    """Keep ``key`` as the one of ``url``, which becomes the URL of commands given none."""
    stored = load()
    _write(Stored(_normal(url), stored.keys | {_normal(url): key}))
    return location()


def forget(url: str) -> bool:
    """Drop the key of ``url`` (the file goes with the last key); whether there was one."""
    stored = load()
    if stored.key_for(url) is None:
        return False
    keys = {k: v for k, v in stored.keys.items() if k != _normal(url)}
    if not keys:
        location().unlink()
        return True
    _write(Stored(stored.url if stored.url != _normal(url) else None, keys))
    return True


def _write(stored: Stored) -> None:
    path = location()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.parent.chmod(0o700)  # a folder made before, by hand, is the owner's alone too
    partial = path.with_name(f".{path.name}.{os.getpid()}.part")
    partial.unlink(missing_ok=True)
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"url": stored.url, "keys": stored.keys}, f, indent=2)
            f.write("\n")
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
