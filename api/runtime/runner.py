"""Job kinds: how a submitted config becomes a pipeline run, and what a finished run leaves behind
(artifacts and evaluated architectures).

- ``reskd``: the whole pipeline (Algorithm 1; res-students handcrafted, searched or given as a
  genotype), or ``method: assistant``.
- ``search``: only the first searched network of the config (the stages before it run first).
- ``finetune``: train given genotypes as res-students (``{genotype: {...}, channels, layers}``).
- ``distill``: the teacher and S0 by KD only (``max_stages: 0``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from api.runtime.devices import DeviceLocks
from api.runtime.store import JobKind
from distill import observe
from distill.config import parse, require
from search.config import GenotypeNet, RunConfig
from search.pipeline import run, search


def config_for_job(config: RunConfig, kind: JobKind) -> RunConfig:
    """``config`` as a job of ``kind`` runs it; a :class:`ConfigError` names the field."""
    config = config.model_copy(update={"max_stages": 0}) if kind == "distill" else config
    config.check()
    nets = [config.student, *config.res_students]
    if kind == "search":
        require(
            any(n.searched for n in nets),
            ("res_students",),
            "a search job needs a {search: {...}} res-student",
        )
    if kind == "finetune":
        require(
            any(isinstance(n, GenotypeNet) for n in config.res_students),
            ("res_students",),
            "a finetune job trains given genotypes: "
            "{genotype: {normal: [...], reduce: [...]}, channels: C, layers: L}",
        )
    return config


def run_job(claim: Any, settings: Any, queue: Any, device: str) -> dict[str, Any]:
    """Run a claimed job in this process; record its artifacts and architectures. A job that
    asks for several devices runs once its worker has borrowed them (``api.runtime.devices``)."""
    config = config_for_job(parse(RunConfig, claim.config), claim.kind)  # checks it once
    if device != "auto" and config.device == "auto":
        config = config.model_copy(update={"device": device})
    observer = observe.current()
    locks = DeviceLocks(settings.artifact_root / "devices")
    waiting = observer.check if observer is not None else lambda: None
    with locks.borrow(config.devices, waiting=waiting, poll=settings.poll_seconds):
        return _run(claim, config, settings, queue)


def _run(claim: Any, config: RunConfig, settings: Any, queue: Any) -> dict[str, Any]:
    out = settings.job_dir(claim.job_id)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "log.txt"

    def log(line: str) -> None:
        with log_path.open("a") as f:
            f.write(line + "\n")

    stages_dir = settings.stages_dir
    if claim.kind == "search":
        found = search(config, out_dir=out, progress=False, log=log, stages_dir=stages_dir)
        (out / "search.json").write_text(json.dumps(found, indent=2))
        result: dict[str, Any] = {"search": found}
        architectures: list[dict[str, Any]] = []
    else:
        outcome = run(config, out_dir=out, progress=False, log=log, stages_dir=stages_dir)
        result = outcome.to_dict()
        teacher = outcome.row("teacher")
        # the teacher's identity (architecture and checkpoint digest): fronts are per identity
        identity = (result.get("teacher") or {}).get("id") or (teacher.arch if teacher else None)
        architectures = [
            {
                "dataset": config.dataset,
                "teacher": identity,
                "stage": row.model,
                "arch": row.arch,
                "genotypes": [s["genotype"] for s in outcome.searches] or None,
                "accuracy": row.accuracy,
                "val_accuracy": row.val_accuracy,
                "mflops": row.mflops,
                "adaptive_mflops": row.adaptive_mflops,
                "params": round(row.mparams * 1e6),
                "energy": row.energy,
                "seed": config.seed,
            }
            for row in outcome.rows
        ]
    queue.add_results(
        job_id=claim.job_id,
        artifacts=_artifacts(out, result, settings.artifact_root),
        architectures=architectures,
    )
    return result


KINDS_OF_FILES = {
    "report.json": "report",
    "report.txt": "report",
    "test_outputs.npz": "report",  # per-sample test outputs for GI across runs
    "combined_student.pt": "combined_student",
    "assisted_student.pt": "assisted_student",
    "log.txt": "log",
    "config.json": "config",
    "preprocessing.json": "config",
    "search.json": "search",
}


def searches_of(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The searches a job's result records (a reskd run's list, or a search job's one)."""
    return list(result.get("searches") or ([result["search"]] if "search" in result else []))


def _artifacts(out: Path, result: dict[str, Any], root: Path) -> list[dict[str, Any]]:
    root = root.resolve()
    files: list[tuple[str, str, Path]] = [
        (p.name, KINDS_OF_FILES[p.name], p)
        for p in sorted(out.iterdir())
        if p.name in KINDS_OF_FILES
    ]
    for found in searches_of(result):
        directory = Path(found["directory"])
        for name, kind in (
            ("genotype.json", "genotype"),
            ("alphas.png", "plot"),
            ("cells.png", "plot"),
            ("search.json", "search"),
        ):
            if (directory / name).is_file():
                files.append((f"{found['network']}-{name}", kind, directory / name))
    for stage in result.get("stages", []):
        weights = next(
            Path(root / "stages").glob(f"{stage['kind']}-{stage['key']}/weights.pt"), None
        )
        if weights is not None:
            files.append((f"{stage['kind']}-{stage['key']}.pt", "checkpoint", weights))
    return [
        {
            "name": name,
            "kind": kind,
            "path": str(path.resolve().relative_to(root)),
            "size": path.stat().st_size,
        }
        for name, kind, path in files
    ]
