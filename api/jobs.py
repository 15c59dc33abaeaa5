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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from search.pipeline import RunConfig, run, search

KINDS = ("reskd", "search", "finetune", "distill")


def parse_config(kind: str, raw: Any) -> RunConfig:
    """The job's config, checked field by field (errors name the field) before it is queued."""
    if kind not in KINDS:
        raise ValueError(f"kind: must be one of {', '.join(KINDS)}, got {kind!r}")
    if not isinstance(raw, Mapping):
        raise ValueError("config: a mapping of run settings (dataset, teacher, student, ...)")
    data = dict(raw)
    if kind == "distill":
        data["max_stages"] = 0
    config = RunConfig.from_dict(data)
    nets = [config.student, *config.res_students]
    if kind == "search" and not any(n.searched for n in nets):
        raise ValueError("res_students: a search job needs a {search: {...}} res-student")
    if kind == "finetune" and not any(n.genotype is not None for n in config.res_students):
        raise ValueError(
            "res_students: a finetune job trains given genotypes: "
            "{genotype: {normal: [...], reduce: [...]}, channels: C, layers: L}"
        )
    return config


def run_job(claim: Any, settings: Any, queue: Any, device: str) -> dict[str, Any]:
    """Run a claimed job in this process; record its artifacts and architectures."""
    config = parse_config(claim.kind, claim.config)
    if device != "auto" and config.device == "auto":
        config = RunConfig.from_dict({**config.to_dict(), "device": device})
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
        architectures = [
            {
                "dataset": config.dataset,
                "teacher": outcome.rows[0]["arch"],
                "stage": row["model"],
                "arch": row["arch"],
                "genotypes": [s["genotype"] for s in outcome.searches] or None,
                "accuracy": row["accuracy"],
                "mflops": row["mflops"],
                "adaptive_mflops": row["adaptive_mflops"],
                "params": round(row["mparams"] * 1e6),
                "energy": row.get("energy"),
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
    "combined_student.pt": "combined_student",
    "assisted_student.pt": "assisted_student",
    "log.txt": "log",
    "config.json": "config",
    "search.json": "search",
}


def _artifacts(out: Path, result: dict[str, Any], root: Path) -> list[dict[str, Any]]:
    root = root.resolve()
    files: list[tuple[str, str, Path]] = [
        (p.name, KINDS_OF_FILES[p.name], p)
        for p in sorted(out.iterdir())
        if p.name in KINDS_OF_FILES
    ]
    searches = result.get("searches") or ([result["search"]] if "search" in result else [])
    for found in searches:
        directory = Path(found["directory"])
        for name, kind in (("genotype.json", "genotype"), ("alphas.png", "plot")):
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
