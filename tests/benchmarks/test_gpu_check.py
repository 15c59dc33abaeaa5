"""``python -m benchmarks.gpu_check --device cpu --tiny``: the GPU check's code end to end in
seconds, every part's rows present with positive figures, and its record written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import gpu_check


@pytest.mark.slow  # trains ResNets, searches and runs a ResKD job (12 s here)
def test_the_gpu_check_runs_tiny_on_the_cpu_and_records_every_part(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "gpu_check_cpu.json"
    rows = gpu_check.main(["--device", "cpu", "--tiny", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "part  check" in printed and "gpu_check: " in printed
    by_part = {part: [r for r in rows if r["part"] == part] for part in "abcd"}
    assert len(by_part["a"]) == 4 and all(r["detail"].endswith(": ok") for r in by_part["a"])
    checks = [r["check"] for r in by_part["b"]]
    for step in ("STACNAS stage 1, one-level", "DARTS, bilevel"):
        for precision in ("float32", "bf16"):
            assert f"ours: {step}, tiny search (3 cells), {precision}" in checks
    nni_row = by_part["b"][-1]
    assert nni_row["check"].startswith("NNI 3.0")
    assert nni_row["value"] is None and "not installed" in nni_row["detail"]
    for row in by_part["b"][:-1]:
        assert row["value"] > 0 and 0 < row["share_of_peak"] < 1
    assert len(by_part["c"]) == 12  # 2 networks x 3 precisions x 2 data paths
    for model in ("resnet20", "resnet110"):
        for path in ("data on the device", "DataLoader"):
            check = f"{model}, bf16 + channels-last, {path}"
            row = next(r for r in by_part["c"] if r["check"] == check)
            assert row["value"] > 0
            assert row["seconds_per_epoch"] == pytest.approx(50_000 / row["value"])
    (job,) = by_part["d"]
    assert job["value"] > 0 and "combined student" in job["detail"]
    record = json.loads(out.read_text())
    assert record["command"].startswith("python") and record["rows"] == rows
