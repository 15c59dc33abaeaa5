"""Where a job's server paths may point: an upload, or a file or folder under a data root."""

from __future__ import annotations

from pathlib import Path

from api.http.datasets import listing
from api.runtime.settings import Settings
from distill.config import ConfigError
from search.config import CHECKPOINTS, RunConfig


def confine(config: RunConfig, settings: Settings) -> RunConfig:
    """A job's server paths, kept to where the service allows: ``teacher_checkpoint`` and
    ``student_checkpoint`` name an uploaded checkpoint (or a file under a data root), ``root`` an
    uploaded dataset by its name (or a directory under a data root; the uploads' folder is one).
    The answer is the same whether or not a refused path exists (no file-existence oracle)."""
    roots = [r.resolve() for r in settings.data_roots]
    shown = ", ".join(str(r) for r in roots) or "none configured"
    shown += "; `reskd serve --data-root DIR` or RESKD_DATA_ROOTS adds one"
    update = _checkpoints(config, settings, roots, shown)
    if config.root is not None:
        update["root"] = str(_dataset_root(config.root, settings, roots, shown))
    return config.model_copy(update=update) if update else config


def _checkpoints(
    config: RunConfig, settings: Settings, roots: list[Path], shown: str
) -> dict[str, str]:
    """Each checkpoint field the config gives, as the path of the file it names."""
    found: dict[str, str] = {}
    for name in CHECKPOINTS:
        given = getattr(config, name)
        if given is None:
            continue
        uploads = settings.checkpoints_dir.resolve()
        path = _inside(uploads / given if "/" not in given else Path(given), [uploads, *roots])
        if path is None:
            raise ConfigError.at(
                (name,),
                "must name a checkpoint uploaded with POST /v1/checkpoints (or a file under "
                f"a data root: {shown})",
            )
        if not _is_file(path):
            raise ConfigError.at((name,), f"no checkpoint {given!r} was uploaded")
        found[name] = str(path)
    return found


def _dataset_root(root: str, settings: Settings, roots: list[Path], shown: str) -> Path:
    """The folder a config's ``root`` names: an upload, or a directory under a data root."""
    uploads = settings.datasets_dir.resolve()
    path = listing.upload_root(settings, root) or _inside(Path(root), [*roots, uploads])
    if path is None:
        names = listing.uploaded_names(settings)
        listed = ", ".join(names[:20]) + (" ..." if len(names) > 20 else "") or "none"
        raise ConfigError.at(
            ("root",),
            f"must name a dataset uploaded with POST /v1/datasets (uploaded: {listed}) or "
            f"a directory under a data root ({shown})",
        )
    return path


def _inside(path: Path, roots: list[Path]) -> Path | None:
    """``path`` resolved, if it lies under one of ``roots`` (None for a name the system
    refuses, such as one too long)."""
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError):
        return None
    return resolved if any(resolved.is_relative_to(r) for r in roots) else None


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # a name the system refuses
        return False
