"""The ResKD pipeline, wired: a run config -> the teacher (``distill.prepare``) -> Algorithm 1
(``distill.reskd``) or Gao et al.'s method (``distill.assistant_run``), with every searched
network found by ``search.run`` in a stage of the same store before it is fine-tuned.

Stages are stored under ``stages_dir`` (default ``out_dir``) keyed by their config and inputs: a
finished stage is loaded instead of computed again, an interrupted one resumes from its last epoch,
and a changed config computes only what it changes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from distill.assistant_run import run_assistant
from distill.catalog import DatasetInfo
from distill.config import ConfigError
from distill.models import NetSpec
from distill.prepare import Prepared, TeacherSource, prepare
from distill.report import Report
from distill.reskd import ResKD, ResStudent, Source, StageInputs, fixed
from distill.stages import StageStore
from search.config import RunConfig
from search.nets import (
    GenotypeNet,
    SearchedNet,
    ZooNet,
    spec_of,
    teacher_kind_of,
    teacher_label,
    teacher_spec,
)
from search.run import derive_search, read_found, residual_objective, run_search
from space.genotypes import Genotype


def _prepare(
    config: RunConfig, out_dir: Path, stages_dir: Path | None, progress: bool,
    log: Callable[[str], None],
) -> Prepared:  # fmt: skip
    config.check()
    teacher = config.teacher
    assert not isinstance(teacher, SearchedNet)  # checked: a teacher is never searched
    store = StageStore(stages_dir or out_dir, log=log)
    declared = [(loc, net.num_classes) for loc, net in config.nets() if net.num_classes]

    def source(info: DatasetInfo) -> TeacherSource:
        kind = teacher_kind_of(teacher)
        return TeacherSource(kind, teacher_spec(teacher, info), teacher_label(teacher, info))

    return prepare(
        config, teacher=source, out_dir=out_dir, store=store, progress=progress,
        declared_classes=declared,
    )  # fmt: skip


def searched(net: SearchedNet) -> Source:
    """A res-student found by a search against its stage's residual target, then fine-tuned."""

    def source(stage: StageInputs) -> ResStudent:
        found, key = search_stage(net, stage)
        return ResStudent(
            NetSpec.of_genotype(
                Genotype.from_dict(found["genotype"]),
                stage.prepared.data.info,
                channels=found["channels"],
                layers=net.search.layers,
                auxiliary=net.search.auxiliary,
                drop_path_prob=net.search.drop_path_prob,
            ),
            inputs={"search": key},
            search=found,
        )

    return source


def search_stage(net: SearchedNet, stage: StageInputs) -> tuple[dict[str, Any], str]:
    """The search of one network as a stage of the store (resumed per epoch, reused when done).
    With ``supernet_budget_mflops`` the supernet is the stored search at that budget, shared by
    every network that differs only in its budget, and this network is a ``derive`` stage of it
    (no training but the ranking's, when asked); its record names the search it derived from."""
    p, spec = stage.prepared, net.search
    trains = p.config.train_config(nas=True)  # its precision and devices, as the networks'
    inputs = {"kd": stage.method.for_stage(stage.i), "input": stage.previous_key, "stage": stage.i}
    factory = residual_objective(
        method=stage.method, objective=stage.objective, teacher=stage.teacher, base=stage.base,
        cache=stage.cache,
    )  # fmt: skip
    common: dict[str, Any] = {
        "info": p.data.info, "train_data": p.data.train, "objective_factory": factory,
        "device": p.config.device, "progress": p.progress,
        "log": lambda line: p.log(f"{stage.name} {line}"),
        "precision": trains.precision, "devices": trains.devices,
    }  # fmt: skip
    searched_spec = spec if spec.supernet_budget_mflops is None else spec.shared_supernet()

    def search(directory: Path) -> None:
        run_search(searched_spec, out_dir=directory, **common)

    result = shared = p.store.compute(
        "search",
        {"spec": searched_spec.to_dict(), **inputs, **p.data_key, **trains.run_key()},
        desc=f"{stage.name} search ({spec.strategy})",
        make=search,
    )

    def derive(directory: Path) -> None:
        derive_search(spec, read_found(shared.directory), out_dir=directory, **common)

    if spec.supernet_budget_mflops is not None:
        p.stages.append(shared.summary() | {"network": stage.name})
        result = p.store.compute(
            "derive",
            {"spec": spec.to_dict(), "search": shared.key, **trains.run_key()},
            desc=f"{stage.name} derived at {spec.budget_mflops:g} MFLOPs",
            make=derive,
        )
    p.stages.append(result.summary() | {"network": stage.name})
    stored = json.loads((result.directory / "search.json").read_text())
    found = {
        "genotype": stored["genotype"],
        "channels": stored["channels"],
        "layers": stored["layers"],
        "mflops": stored["mflops"],
        "budget_mflops": spec.budget_mflops,
        "strategy": spec.strategy,
        "repair": stored["derivation"]["repair"],
        "plot": str(result.directory / "alphas.png"),
        "cells": str(result.directory / "cells.png"),
        "directory": str(result.directory),
        "derived_from": None if result is shared else f"search-{shared.key}",
    }
    return found, result.key


def source_of(net: ZooNet | GenotypeNet | SearchedNet, info: Any) -> Source:
    return searched(net) if isinstance(net, SearchedNet) else fixed(spec_of(net, info))


def run(
    config: RunConfig,
    *,
    out_dir: Path,
    progress: bool = True,
    log: Callable[[str], None] = print,
    stages_dir: Path | None = None,
) -> Report:
    """Algorithm 1 (with the Table II baselines when asked) or the assistant method, then the
    report. A service shares one ``stages_dir`` between its jobs."""
    p = _prepare(config, out_dir, stages_dir, progress, log)
    for deviation in config.deviations():
        log(f"note: {deviation}")
    return RUNNERS[config.method](config, p)


def _run_reskd(config: RunConfig, p: Prepared) -> Report:
    """Algorithm 1: S0, then res-students until Energy says stop, then the combined student."""
    algorithm = ResKD(p)
    for i in range(config.stages + 1):  # i = 0 is S0
        net = config.student if i == 0 else config.res_student(i)
        if algorithm.step(i, source_of(net, p.data.info)):
            break
    return algorithm.finish()


def _run_assistant(config: RunConfig, p: Prepared) -> Report:
    """Gao et al.'s method on the student split into S and A."""
    student, a = config.student, config.assistant
    assert isinstance(student, ZooNet)  # checked: the assistant method splits a zoo network
    return run_assistant(
        p, student=spec_of(student, p.data.info), variant=a.variant, separation=a.separation,
        at_weight=a.at_weight, at_mode=a.at_mode,
    )  # fmt: skip


# what each run method (``RunConfig.method``) runs once the teacher is prepared
RUNNERS: dict[str, Callable[[RunConfig, Prepared], Report]] = {
    "reskd": _run_reskd,
    "assistant": _run_assistant,
}


def search(
    config: RunConfig,
    *,
    out_dir: Path,
    progress: bool = True,
    log: Callable[[str], None] = print,
    stages_dir: Path | None = None,
) -> dict[str, Any]:
    """Only the first searched network (``reskd search``): the stages before it run (or are
    reused) so that its residual target exists; returns the search's record (genotype, channels,
    counted MFLOPs, plot, directory)."""
    nets = [config.student, *(config.res_student(i) for i in range(1, config.stages + 1))]
    first = next((i for i, n in enumerate(nets) if isinstance(n, SearchedNet)), None)
    if first is None:
        raise ConfigError.at(
            ("res_students",),
            "the config searches no network; give a res-student (or the student) as "
            "{search: {budget_mflops: ..., epochs: ..., channels: ..., layers: ...}}",
        )
    p = _prepare(config, out_dir, stages_dir, progress, log)
    algorithm = ResKD(p)
    for i in range(first):
        algorithm.step(i, source_of(nets[i], p.data.info))
    target = nets[first]
    assert isinstance(target, SearchedNet)
    stage = algorithm.inputs(first)
    found, _ = search_stage(target, stage)
    return {"network": stage.name, **found}
