"""A user's own teacher and data through a real service, as the guide shows: an ImageFolder of
16x16 PNGs with its own mean/std, a torchvision network (and a TorchScript one of an architecture
in no zoo) trained on it in a plain PyTorch loop, uploaded, distilled into S0 and a searched
res-student, exported by job id and run on the raw test PNGs."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from api.cli.main import main
from tests.api.service import Service
from tests.own.digits_folder import ARCH, Own

# the module's service on one test worker in a parallel run
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("own-teacher")]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, mine: Own) -> Iterator[Service]:
    root = tmp_path_factory.mktemp("service")
    svc = Service(root, extra_env={"RESKD_DATA_ROOTS": json.dumps([str(mine.data.parent)])})
    try:
        yield svc
    finally:
        svc.stop()


def upload(service: Service, path: Path, **params: str) -> Any:
    return service.http.post(
        "/v1/checkpoints",
        params={"name": path.name, **params},
        content=path.read_bytes(),
        headers={"Content-Type": "application/octet-stream"},
    )


def job_config(mine: Own, teacher: dict[str, Any], checkpoint: str, **extra: Any) -> dict[str, Any]:
    return {
        "dataset": "imagefolder",
        "root": str(mine.data),
        "mean": mine.mean,
        "std": mine.std,
        "teacher": teacher,
        "teacher_checkpoint": checkpoint,
        "student": {"model": "resnet8", "width": 0.25},
        "res_students": [
            {"search": {"budget_mflops": 0.4, "epochs": 1, "channels": 4, "layers": 3}}
        ],
        "max_stages": 1,
        "val_size": 100,
        "preset": "cpu-tiny",
        "train": {"epochs": 2, "batch_size": 64},
    } | extra


def run_and_export(service: Service, config: dict[str, Any], out: Path) -> dict[str, Any]:
    job = service.done(service.submit(config)["id"], timeout=600)
    assert job["state"] == "succeeded", job.get("error")
    args = ["export", str(job["id"]), "--out", str(out), "--format", "onnx"]
    assert main([*args, "--url", service.url]) == 0
    return job


def predicted_accuracy(out: Path, data: Path) -> float:
    """`python DIR/predict.py` on every raw test PNG: the share whose printed class is its folder."""
    images = sorted(data.glob("test/*/*.png"))
    done = subprocess.run(
        [sys.executable, str(out / "predict.py"), "--json", *map(str, images)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    predictions = json.loads(done.stdout)["predictions"]
    right = sum(p["class"] == Path(p["path"]).parent.name for p in predictions)
    return 100.0 * right / len(images)


def rows(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["model"]: r for r in job["metrics"]}


def test_torchvision_teacher_from_a_plain_loop(service: Service, mine: Own, tmp_path: Path) -> None:
    wrong = upload(service, mine.tv_file, teacher="torchvision:resnet34")
    assert wrong.status_code == 400
    assert "does not fit torchvision:resnet34" in wrong.json()["detail"]
    assert "\n" not in wrong.json()["detail"]
    r = upload(service, mine.tv_file, teacher=f"torchvision:{ARCH}")
    assert r.status_code == 201, r.text

    config = job_config(mine, {"torchvision": ARCH}, r.json()["name"])
    job = run_and_export(service, config, tmp_path / "export")
    by = rows(job)
    # (a) the teacher scores as it did outside, on the same test images
    assert abs(100 * by["T"]["accuracy"] - mine.tv_accuracy) <= 0.5
    # (b) every cost is counted at the 16x16 the networks see
    from distill.data import peek_info
    from distill.models import NetSpec, complexity

    info = peek_info("imagefolder", root=mine.data)
    assert info.input_shape == (3, 16, 16)
    s0 = NetSpec("resnet8", 0.25, 10, 3, 16).build()
    assert by["S0"]["mflops"] == pytest.approx(complexity(s0, info).mflops)
    # (c) the export by job id reads the raw PNGs as the report's deployed student scores
    result = service.http.get(f"/v1/jobs/{job['id']}/artifacts/report.json").json()
    assert (
        abs(predicted_accuracy(tmp_path / "export", mine.data) - 100 * result["deploy"]["accuracy"])
        <= 0.1
    )
    assert result["teacher"]["id"].startswith(f"torchvision:{ARCH}@")


def test_torchscript_teacher_of_an_architecture_in_no_zoo(
    service: Service, mine: Own, tmp_path: Path
) -> None:
    r = upload(service, mine.ts_file, teacher="torchscript")
    assert r.status_code == 201, r.text
    config = job_config(mine, {"program": "torchscript"}, r.json()["name"])
    job = run_and_export(service, config, tmp_path / "export")
    by = rows(job)
    assert abs(100 * by["T"]["accuracy"] - mine.ts_accuracy) <= 0.5
    result = service.http.get(f"/v1/jobs/{job['id']}/artifacts/report.json").json()
    assert (
        abs(predicted_accuracy(tmp_path / "export", mine.data) - 100 * result["deploy"]["accuracy"])
        <= 0.1
    )
    # a black box gives logits only: the feature-map method refuses it at submit, in one line
    refused = service.http.post(
        "/v1/jobs",
        json={"kind": "reskd", "config": config | {"method": "assistant", "res_students": []}},
    )
    assert refused.status_code == 422
    assert "feature maps" in refused.text


def test_the_gate_stops_a_teacher_fed_the_wrong_normalisation(service: Service, mine: Own) -> None:
    name = upload(service, mine.tv_file, teacher=f"torchvision:{ARCH}").json()["name"]
    config = job_config(mine, {"torchvision": ARCH}, name)
    del config["mean"], config["std"]  # the catalog's ImageNet normalisation, not the teacher's
    job = service.done(service.submit(config | {"max_stages": 0, "res_students": []})["id"])
    assert job["state"] == "failed"
    assert "teacher_checkpoint" in job["error"] and "set mean and std" in job["error"]
    allowed = config | {"max_stages": 0, "res_students": [], "allow_weak_teacher": True}
    job = service.done(service.submit(allowed)["id"])
    assert job["state"] == "succeeded", job.get("error")
    warnings = service.http.get(f"/v1/jobs/{job['id']}/artifacts/report.json").json()["warnings"]
    assert any("set mean and std" in w for w in warnings)
