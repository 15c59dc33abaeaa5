"""Config files as the command line reads them: a YAML or JSON mapping, and ``--set KEY=VALUE``
changes to it. One syntax for ``reskd run / search / submit``, the benchmarks and the tests."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml


def load_json_or_yaml(path: Path) -> dict[str, Any]:
    """The mapping in the YAML or JSON file at ``path``; a ValueError that says where a file is
    missing, unreadable as YAML (line and column) or not a mapping."""
    if not path.is_file():
        raise ValueError(f"config: no file at {path}")
    try:
        raw = yaml.safe_load(path.read_text())  # JSON is YAML
    except yaml.YAMLError as exc:  # one line: where and what, not PyYAML's traceback
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ValueError(f"config: {path} is not valid YAML or JSON{at}: {problem}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"config: {path} must hold a mapping of fields")
    return raw


def with_sets(raw: dict[str, Any], sets: Sequence[str]) -> dict[str, Any]:
    """A copy of ``raw`` changed by ``--set train.epochs=1`` items: a YAML value at a dotted key
    (missing mappings are made); list items by index (``res_students.0.width=0.5``). A
    ValueError names an item that is no ``KEY=VALUE`` or whose path leads nowhere."""
    raw = copy.deepcopy(raw)
    for item in sets:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set: expected KEY=VALUE (e.g. train.epochs=1), got {item!r}")
        *path, last = key.split(".")
        node = _node_at(raw, path, key)
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        if isinstance(node, list):
            if not last.isdigit() or int(last) >= len(node):
                raise ValueError(f"--set {key}: {'.'.join(path)} has no item {last}")
            node[int(last)] = value
        else:
            node[last] = value
    return raw


def _node_at(raw: dict[str, Any], path: list[str], key: str) -> dict[str, Any] | list[Any]:
    """The mapping or list at ``path`` in ``raw``, mappings made where missing."""
    node: Any = raw
    for i, part in enumerate(path):
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ValueError(f"--set {key}: {'.'.join(path[:i])} has no item {part}")
            node = node[int(part)]
        else:
            node = node.setdefault(part, {})
        if not isinstance(node, dict | list):
            raise ValueError(f"--set {key}: {'.'.join(path[: i + 1])} is not a mapping")
    return node
