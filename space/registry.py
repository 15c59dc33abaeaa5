"""Named extension points (search strategies, KD methods, datasets, teacher kinds) as registries.

A registry maps the names that arrive as strings from outside (a config, the CLI, an HTTP body)
to the entry that carries its own config model and hooks; nothing outside the registry switches
on the name. Built-ins and third-party packages register the same way: through a Python
entry-point group (``reskd.strategies``, ``reskd.methods``, ``reskd.datasets``,
``reskd.teachers``), so a package installed beside the service adds a strategy without touching
this repository::

    # the plug-in's pyproject.toml
    [project.entry-points."reskd.strategies"]
    random = "reskd_toy:RandomStrategy"

An entry point's name is the registered name; it loads the entry itself (a class or an
instance). The group is read once, on the first lookup; ``register`` adds an entry in code (tests,
notebooks). An unknown name is an ``UnknownName`` (a ``ValueError``, so pydantic validators turn
it into a 422) that lists the registered names.

This module sits in the lowest layer (``space``) so every layer above can hold a registry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from importlib.metadata import EntryPoint, entry_points
from threading import RLock
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class UnknownName(ValueError):
    """A name no entry of the registry has; the message lists the registered ones."""

    def __init__(self, what: str, name: object, known: list[str]) -> None:
        self.what, self.name, self.known = what, name, known
        super().__init__(f"unknown {what} {name!r}; registered: {', '.join(known) or 'none'}")


class RegistryError(RuntimeError):
    """An entry point that fails to load, or two entries under one name."""


class Registry(Generic[T]):
    """Entries of one extension point, by name, loaded from the entry-point group ``group``.

    ``what`` names an entry in messages ("search strategy"); ``check`` (optional) validates an
    entry as it is registered (its name, its config model) and raises ``RegistryError``;
    ``order`` (optional) gives an entry's sort key for listing (iteration, ``names``, ``items``):
    by default, entry points by name, then entries registered in code as they came.
    """

    def __init__(
        self,
        what: str,
        group: str,
        *,
        check: Callable[[str, T], None] | None = None,
        order: Callable[[T], Any] | None = None,
    ) -> None:
        self.what, self.group, self._check, self._order = what, group, check, order
        self._entries: dict[str, T] = {}
        self._loaded = False
        self._lock = RLock()

    def register(self, name: str, entry: T, *, replace: bool = False) -> T:
        """Add ``entry`` under ``name``; a second entry under one name is an error unless
        ``replace``. Returns the entry (so it can decorate a class)."""
        with self._lock:
            self._load()
            self._add(name, entry, replace=replace)
        return entry

    def unregister(self, name: str) -> None:
        with self._lock:
            self._entries.pop(name, None)

    def get(self, name: str) -> T:
        """The entry of ``name``, else ``UnknownName`` listing the registered names."""
        entries = self._all()
        if not isinstance(name, str) or name not in entries:
            raise UnknownName(self.what, name, sorted(entries))
        return entries[name]

    __getitem__ = get

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._all()

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._all()))

    def __len__(self) -> int:
        return len(self._all())

    def names(self) -> list[str]:
        return list(self._all())

    def items(self) -> list[tuple[str, T]]:
        return list(self._all().items())

    def values(self) -> list[T]:
        return list(self._all().values())

    def _all(self) -> dict[str, T]:
        with self._lock:
            self._load()
            entries = dict(self._entries)
        if self._order is None:
            return entries
        order = self._order
        return dict(sorted(entries.items(), key=lambda item: order(item[1])))

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True  # before loading: an entry's module may look its own registry up
        found = sorted(entry_points(group=self.group), key=lambda e: (e.dist is None, e.name))
        for point in found:
            self._add(point.name, self._entry(point), replace=False)

    def _entry(self, point: EntryPoint) -> T:
        try:
            entry: T = point.load()
        except Exception as exc:  # a broken plug-in names itself instead of a bare traceback
            raise RegistryError(
                f"{self.group} entry point {point.name!r} ({point.value}) failed to load: {exc}"
            ) from exc
        return entry

    def _add(self, name: str, entry: T, *, replace: bool) -> None:
        known = self._entries.get(name)
        if known is not None and known is not entry and not replace:
            raise RegistryError(f"{self.what} {name!r} is registered twice ({self.group})")
        if self._check is not None:
            self._check(name, entry)
        self._entries[name] = entry
