"""``reskd export JOB``: a job's deployable student, from a real service, into a directory that
classifies image files (``reskd predict``, ``python DIR/predict.py``) as PyTorch does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from api.cli.main import main
from api.client import Client, ServiceError
from distill.combined import CombinedStudent
from distill.data import load_dataset
from tests.api.service import Service, tiny_config


@pytest.mark.slow  # trains a tiny job on a real service
def test_export_by_job_id_then_predict_on_image_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from PIL import Image

    svc = Service(tmp_path / "svc", workers=1)
    try:
        job = svc.done(svc.submit(tiny_config())["id"])
        assert job["state"] == "succeeded", job.get("error")
        out = tmp_path / "deploy"
        assert main(["export", str(job["id"]), "--url", svc.url, "--out", str(out)]) == 0
        said = capsys.readouterr().out
        client = Client(svc.url)  # a download makes its folders; a missing one leaves no file
        student = client.download(job["id"], "combined_student.pt", tmp_path / "a" / "b" / "s.pt")
        with pytest.raises(ServiceError, match="HTTP 404"):
            client.download(job["id"], "nothing.pt", tmp_path / "c" / "nothing.pt")
        assert list((tmp_path / "c").iterdir()) == []
    finally:
        svc.stop()
    assert "checked on 360 digits test images" in said, said
    kinds = {a["name"]: a["kind"] for a in job["artifacts"]}
    assert kinds["preprocessing.json"] == "config" and kinds["config.json"] == "config"
    manifest = json.loads((out / "manifest.json").read_text())
    parts = [p["file"] for p in manifest["parts"]]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*parts, "manifest.json", "predict.py", "run_adaptive.py"]
    )  # the downloaded student and config stay out of the deployable directory
    assert manifest["preprocessing"]["image_size"] == 8 and len(manifest["class_names"]) == 10

    # digits test images as the PNG files a user has: pixels as the dataset holds them
    test = load_dataset("digits", augment=False).test
    paths = []
    for k in range(6):
        path = tmp_path / "images" / f"digit{k}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(test.images[k, 0].numpy(), "L").save(path)  # type: ignore[attr-defined]
        paths.append(str(path))
    model = CombinedStudent.load(student)
    if model.deploy_stage is not None:
        model = model.truncated(model.deploy_stage)
    with torch.no_grad():
        expected = model.adaptive(torch.stack([test[k][0] for k in range(6)]))
    assert parts == ["S0.onnx", "R1.onnx"][: model.num_stages + 1]
    names = manifest["class_names"]

    assert main(["predict", str(out), *paths]) == 0
    printed = capsys.readouterr().out
    assert [line.split("\t") for line in printed.splitlines()[:-1]] == [
        [p, names[int(c)], f"res-students {int(u)}"]
        for p, c, u in zip(paths, expected.logits.argmax(1), expected.used, strict=True)
    ]
    alone = subprocess.run(
        [sys.executable, "-I", str(out / "predict.py"), *paths],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert alone.returncode == 0 and alone.stdout == printed, alone.stderr
    mean = float(expected.used.float().mean())
    assert printed.splitlines()[-1].startswith(f"mean res-students used: {mean:.2f} of ")
