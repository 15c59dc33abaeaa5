"""What ``GET /v1/datasets`` lists: the shipped datasets, the uploads, and the data found at or
directly under each data root by the surveys of the registry's datasets (``DatasetEntry.survey``:
CIFAR roots and image folders, and a plug-in's). A dataset's facts are kept while its survey's
stamp (the modification times of its files) stays the same.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any, Literal

from api.http.datasets.layout import NAME
from api.http.schemas import DatasetPublic
from api.runtime.settings import Settings
from distill.catalog import IMAGEFOLDER, DatasetEntry, Facts, Found
from distill.data import DATASETS, load_dataset, num_samples
from distill.datasets import folders
from distill.datasets.folders import text

log = logging.getLogger("reskd.datasets")

KEPT = 512  # datasets whose facts are kept


def listing(settings: Settings) -> list[DatasetPublic]:
    """Every dataset a job over the API can use: shipped, uploaded, then under each data root."""
    rows = [_shipped_entry(name) for name, d in DATASETS.items() if not d.info.needs_root]
    rows += [upload_entry(settings, name) for name in uploaded_names(settings)]
    surveyed = [d for d in DATASETS.values() if d.survey is not None]
    for data_root in settings.data_roots:
        for path in _candidates(data_root):
            for dataset in surveyed:
                found = _survey(dataset, path)
                if found is not None:
                    rows.append(_root_entry(path, dataset, found))
    return rows


def _survey(dataset: DatasetEntry, path: Path) -> Found | None:
    """What ``dataset``'s survey finds at ``path``; a survey that fails (a plug-in's fault) is a
    problem on its row, not a failed listing."""
    try:
        return dataset.surveyed(path)
    except Exception as exc:  # a hook of a third party: its fault is reported, never a 500
        log.warning("dataset %s: its survey of %s failed", dataset.info.name, path, exc_info=exc)
        return Found.known(Facts(problem=f"its survey failed: {type(exc).__name__}: {exc}"))


def uploaded_names(settings: Settings) -> list[str]:
    try:
        entries = list(os.scandir(settings.datasets_dir))
    except OSError:  # none uploaded yet
        return []
    return sorted(e.name for e in entries if NAME.match(e.name) and e.is_dir(follow_symlinks=False))


def upload_root(settings: Settings, name: str) -> Path | None:
    """The folder of the upload ``name``, if there is one."""
    if not NAME.match(name):
        return None
    path = settings.datasets_dir / name
    return path.resolve() if path.is_dir() else None


def upload_entry(settings: Settings, name: str) -> DatasetPublic:
    path = settings.datasets_dir / name
    kind = IMAGEFOLDER.info.name
    facts = _facts(kind, path, folders.found(path))
    return _entry(name, kind, "upload", kind, name, facts, channels=IMAGEFOLDER.info.in_chans)


@cache
def _shipped_facts(name: str) -> Facts:
    bundle = load_dataset(name, augment=False)
    size = bundle.info.image_size
    return Facts(
        bundle.info.classes,
        num_samples(bundle.train),
        num_samples(bundle.test),
        size,
        size,
    )


def _shipped_entry(name: str) -> DatasetPublic:
    info = DATASETS[name].info
    facts = _shipped_facts(name)
    return _entry(name, "shipped", "package", name, None, facts, channels=info.in_chans)


def _root_entry(path: Path, dataset: DatasetEntry, found: Found) -> DatasetPublic:
    info = dataset.info
    facts = _facts(info.name, path, found)
    return _entry(
        text(path.name), info.name, "data_root", info.name, str(path), facts, channels=info.in_chans
    )


def _facts(dataset: str, path: Path, found: Found) -> Facts:
    if found.stamp is None:
        return found.read()
    return _kept_facts((dataset, str(path), found.stamp), found.read)


def _entry(
    name: str,
    kind: str,
    source: Literal["package", "upload", "data_root"],
    dataset: str,
    root: str | None,
    facts: Facts,
    *,
    channels: int,
) -> DatasetPublic:
    return DatasetPublic(
        name=name,
        kind=kind,
        source=source,
        dataset=dataset,
        root=root,
        num_classes=len(facts.classes),
        classes=list(facts.classes),
        train_images=facts.train,
        test_images=facts.test,
        width=facts.width,
        height=facts.height,
        mixed_sizes=facts.mixed,
        channels=channels,
        mode=facts.mode,
        problem=facts.problem,
    )


def _candidates(data_root: Path) -> list[Path]:
    """The data root and the folders directly in it that a job's ``root`` may name (a link
    that leaves the data root may not: it is not listed)."""
    try:
        base = data_root.resolve()
        children = sorted(e.path for e in os.scandir(base) if e.is_dir() and e.name[:1] != ".")
    except OSError:  # missing or unreadable: nothing to list
        return []
    found = [base]
    for child in children:
        resolved = Path(child).resolve()
        if resolved.is_relative_to(base) and text(resolved.name) == resolved.name:
            found.append(resolved)
    return found


_kept: OrderedDict[tuple[Any, ...], Facts] = OrderedDict()
_kept_lock = threading.Lock()


def _kept_facts(key: tuple[Any, ...], compute: Callable[[], Facts]) -> Facts:
    with _kept_lock:
        if key in _kept:
            _kept.move_to_end(key)
            return _kept[key]
    facts = compute()  # outside the lock: two first listings may both compute, the same facts
    with _kept_lock:
        _kept[key] = facts
        while len(_kept) > KEPT:
            _kept.popitem(last=False)
    return facts
