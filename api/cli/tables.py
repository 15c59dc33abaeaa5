"""What the client commands print: jobs, sweeps and Pareto fronts as tables, their numbers as
``space.numbers`` writes them (accuracy ``97.25%``, MFLOPs ``0.242``)."""

from __future__ import annotations

from typing import Any

from api.client.progress import phase_name, status_text
from distill.report import SUMMARY_COLUMNS, format_table, metrics_table, repair_text
from space.numbers import cost_text, field_text, mflops, percent


def metrics_text(metrics: list[dict[str, Any]]) -> str:
    """A job's report rows (``SUMMARY_COLUMNS``) by the number convention."""
    return metrics_table(metrics, SUMMARY_COLUMNS)


def print_job(job: dict[str, Any], base_url: str = "") -> None:
    """``reskd show``: state (and why a queued job waits), teacher, warnings, progress, stages,
    metrics, searches (their cells at ``base_url``) and artifacts of a job."""
    print(f"job {job['id']} ({job['kind']}, {job['dataset']}): {job['state']}")
    if job.get("held"):
        print(f"held: {job['held']}")
    if job.get("error"):
        print(f"error: {job['error']}")
    teacher = job.get("teacher") or {}
    if teacher.get("val_accuracy") is not None:
        print(f"teacher {teacher['id']}: {percent(teacher['val_accuracy'])} on D_v")
    for warning in job.get("warnings") or []:
        print(f"warning: {warning}")
    p = job["progress"]
    if job["state"] == "running" and p.get("stage"):
        print(", ".join(x for x in (f"stage {phase_name(p)}", status_text(p)) if x))
    if job["stages"]:
        rows = [
            {
                "stage": s["name"],
                "kind": s["kind"],
                "state": s["state"] + (" (reused)" if s["reused"] else ""),
                "resumed_from": s["resumed_from_epoch"],
                "progress": status_text(s["progress"], live=False) or "-",
            }
            for s in job["stages"]
        ]
        print(format_table(rows, list(rows[0])))
    if job["metrics"]:
        print()
        print(metrics_text(job["metrics"]))
    if job.get("stop_reason"):
        print(f"stopped: {job['stop_reason']}")
    for found in job.get("searches") or []:
        line = f"\n{found['network']} searched: {mflops(found['mflops'])} MFLOPs"
        if found.get("repair"):
            line += f"; {repair_text(found['repair'])}"
        print(line + (f"\ncells: {base_url}{found['cells']}" if found.get("cells") else ""))
    if job["artifacts"]:
        print("\nartifacts: " + ", ".join(a["name"] for a in job["artifacts"]))


def print_jobs(jobs: list[dict[str, Any]]) -> None:
    """``reskd jobs``: a row per job with its best network on D_v."""
    rows = []
    for j in jobs:
        best = j.get("best") or {}
        rows.append(
            {k: j[k] for k in ("id", "kind", "name", "dataset", "state", "attempts", "created_at")}
            | {"owner": j.get("owner") or "-"}
            | ({"held": j["held"]} if any(x.get("held") for x in jobs) else {})
            | {
                "best (on D_v)": best.get("model", "-"),
                "D_v acc": percent(best.get("val_accuracy")),
                "test acc": percent(best.get("accuracy")),
            }
        )
        if "held" in rows[-1] and not rows[-1]["held"]:
            rows[-1]["held"] = "-"
    print(format_table(rows, list(rows[0])) if rows else "no jobs")


def front_rows(front: dict[str, Any], cost: str = "mflops") -> list[dict[str, Any]]:
    """A Pareto front's architectures as table rows (``reskd pareto``, the demo)."""
    return [
        {
            "stage": a["stage"],
            "arch": a["arch"],
            "D_v acc": percent(a["val_accuracy"]),
            "test acc": percent(a["accuracy"]),
            cost: cost_text(cost, a[cost]),
            "job": a["job_id"],
        }
        for a in front["front"]
    ]


def print_front(front: dict[str, Any], group: dict[str, Any], why: str, cost: str) -> None:
    """``reskd pareto``: the front of ``group`` (one dataset and teacher), chosen for ``why``,
    ranked on D_v accuracy against ``cost``."""
    print(
        f"Pareto front of {group['dataset']}, teacher {group['teacher']} ({why}): "
        f"{len(front['front'])} of {front['considered']} architectures, D_v accuracy against "
        f"{cost}"
    )
    rows = front_rows(front, cost)
    print(format_table(rows, list(rows[0])) if rows else "no architectures with a D_v accuracy")
    print(
        "ranked on D_v accuracy (drawn from the training set); test accuracy is shown "
        "beside it, never ranked on"
    )
    unranked = group["architectures"] - group["ranked"]
    if unranked:
        print(f"on no front: {unranked} stored before D_v accuracy was recorded")


def print_sweeps(sweeps: list[dict[str, Any]]) -> None:
    """``reskd sweep`` without a config or ``--id``: a row per sweep."""
    rows = [
        {k: w[k] for k in ("id", "name", "state", "dataset", "trials", "sampler", "cost")}
        | {"trial jobs": ", ".join(f"{k} {v}" for k, v in sorted(w["trial_states"].items()))}
        for w in sweeps
    ]
    print(format_table(rows, list(rows[0])) if rows else "no sweeps")


def print_sweep(sweep: dict[str, Any], front: dict[str, Any]) -> None:
    """One sweep: its state, a row per trial (``*`` on the Pareto front) and the front."""
    states = ", ".join(f"{k} {v}" for k, v in sorted(sweep["trial_states"].items()))
    print(f"sweep {sweep['id']} ({sweep['dataset']}): {sweep['state']}; trial jobs: {states}")
    if sweep.get("error"):
        print(f"error: {sweep['error']}")
    on_front = {t["number"] for t in front["front"]}
    rows = [
        {
            "trial": t["number"],
            "state": t["state"],
            "job": t["job_id"],
            **{k: field_text(k, v) for k, v in t["params"].items()},
            "D_v acc": percent(t["val_accuracy"]),
            "test acc": percent(t["accuracy"]),
            front["cost"]: cost_text(front["cost"], t["cost"]),
            "pareto": "*" if t["number"] in on_front else "",
        }
        for t in sweep["trial_list"]
    ]
    if rows:
        print(format_table(rows, list(rows[0])))
    unranked = f" ({front['unranked']} without a D_v accuracy)" if front.get("unranked") else ""
    print(
        f"Pareto front: trials {sorted(on_front)} of {front['considered']} complete{unranked}; "
        f"D_v accuracy of S_n against {front['cost']} (test accuracy beside it, never ranked on)"
    )


def print_service_datasets(found: list[dict[str, Any]]) -> None:
    """``reskd datasets --url``: a row per dataset the service can use."""
    rows = [
        {
            "name": d["name"],
            "kind": d["kind"],
            "dataset": d["dataset"],
            "root": d["root"] or "-",
            "classes": d["num_classes"],
            "train": d["train_images"],
            "test": d["test_images"],
            "size": _size_text(d),
            "channels": d["channels"],
            "problem": d["problem"] or "",
        }
        for d in found
    ]
    print(format_table(rows, list(rows[0])) if rows else "no datasets")


def _size_text(d: dict[str, Any]) -> str:
    """``28x28``, or the first image's ``64x48 mixed`` where a folder's sizes differ."""
    if not d["width"]:
        return "-"
    return f"{d['width']}x{d['height']}" + (" mixed" if d["mixed_sizes"] else "")
