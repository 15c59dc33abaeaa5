"""``reskd export``: the exported students give PyTorch's answers on real test images in ONNX
Runtime, TorchScript and a torch.export program, adaptive inference included (how many
res-students each sample used), and what cannot be exported correctly is refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from distill.adaptive_runner import ExportedStudent
from distill.assistant import AssistedStudent, save_assisted, separate
from distill.combined import CombinedStudent
from distill.data import load_dataset
from distill.export import FORMATS, ExportError, export
from distill.losses import energy
from distill.models import NetSpec
from space.genotypes import DARTS_V2

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def digits() -> tuple[Tensor, Tensor, object]:
    data = load_dataset("digits", augment=False)
    n = 128
    x = torch.stack([data.test[k][0] for k in range(n)])
    y = torch.tensor([data.test[k][1] for k in range(n)])
    return x, y, data.info


def combined(info: object) -> CombinedStudent:
    """S0, a handcrafted R1 and a searched-style R2 (a genotype network); the threshold at S0's
    median Energy, so that some samples stop after S0 and others go on."""
    torch.manual_seed(0)
    specs = [
        NetSpec.for_dataset("resnet8", info, width=0.25),
        NetSpec.for_dataset("resnet8", info, width=0.25),
        NetSpec.of_genotype(DARTS_V2, info, channels=4, layers=3),
    ]
    nets = [s.build().eval() for s in specs]
    for net in nets[1:]:  # res-students add small corrections, as trained ones do
        with torch.no_grad():
            for p in net.parameters():
                p.mul_(0.5)
    return CombinedStudent(nets[0], nets[1:], specs=specs, mflops=[1.0, 1.0, 1.0]).eval()


@pytest.mark.parametrize("fmt", FORMATS)
def test_adaptive_export_matches_pytorch_sample_by_sample(
    fmt: str, digits: tuple, tmp_path: Path
) -> None:
    x, y, info = digits
    model = combined(info)
    with torch.no_grad():
        model.threshold = float(energy(model.s0(x)).median())
        reference = model.adaptive(x)
        full = model.full(x)
    assert 0 < int((reference.used == 0).sum()) < len(x)  # both kinds of samples are present
    assert int((reference.used == 2).sum()) > 0
    manifest, agreement = export(model, tmp_path, fmt, x)  # type: ignore[arg-type]
    assert agreement.used_equal == len(x) and agreement.max_abs_full < 1e-4

    exported = ExportedStudent(manifest)  # what a user runs, outside the export's own check
    logits, used = exported.adaptive(x.numpy())
    np.testing.assert_array_equal(used, reference.used.numpy())
    np.testing.assert_allclose(logits, reference.logits.numpy(), atol=1e-4)
    np.testing.assert_allclose(exported.full(x.numpy()), full.numpy(), atol=1e-4)
    # the adaptive answer is not the full one (the bug of a traced forward: S0 alone)
    assert (logits.argmax(1) == y.numpy()).mean() == pytest.approx(
        float((reference.logits.argmax(1) == y).float().mean())
    )
    assert not np.allclose(logits, model.s0(x).detach().numpy(), atol=1e-3)
    stored = json.loads(manifest.read_text())
    assert [p["file"] for p in stored["parts"]] == [
        f"{n}{dict(onnx='.onnx', torchscript='.pt')[fmt] if fmt != 'exported-program' else '.pt2'}"
        for n in ("S0", "R1", "R2")
    ]
    assert stored["threshold"] == model.threshold and stored["check"]["samples"] == len(x)
    # a batch of one and an odd batch: the batch dimension is dynamic
    one, _ = exported.adaptive(x[:1].numpy())
    np.testing.assert_allclose(one, reference.logits[:1].numpy(), atol=1e-4)


@pytest.mark.parametrize("fmt", ["onnx", "exported-program"])
def test_the_assisted_student_exports_and_runs_the_same(
    fmt: str, digits: tuple, tmp_path: Path
) -> None:
    x, _, info = digits
    split = separate(NetSpec.for_dataset("resnet14", info, width=0.5), ratio=0.9)
    torch.manual_seed(0)
    model = AssistedStudent(
        split.student.build_backbone(), split.assistant.build_backbone(), variant="integrated"
    ).eval()
    with torch.no_grad():  # the adapters start at zero: make A's part visible
        for adapter in model.to_student.values():
            adapter.weight.normal_(0, 0.1)
    save_assisted(model, split, tmp_path / "assisted_student.pt")
    out = tmp_path / "out"
    proc = subprocess.run(  # the command, on the file, as a user runs it
        [
            sys.executable,
            "-m",
            "api.cli.main",
            "export",
            str(tmp_path / "assisted_student.pt"),
            "--format",
            fmt,
            "--dataset",
            "digits",
            "--samples",
            "64",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "same on 64 of 64" in proc.stdout
    exported = ExportedStudent(out / "manifest.json")
    with torch.no_grad():
        expected = model(x).numpy()
    logits, used = exported.adaptive(x.numpy())
    np.testing.assert_allclose(logits, expected, atol=1e-4)
    assert not used.any()


class DataDependent(nn.Module):
    """A res-student whose work depends on its input's values: one graph cannot hold it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.fc(x.flatten(1))
        if bool(out.sum() > 0):
            return out * 2
        return out


@pytest.mark.parametrize("fmt", ["onnx", "exported-program"])
def test_what_cannot_be_exported_correctly_is_refused_and_nothing_kept(
    fmt: str, digits: tuple, tmp_path: Path
) -> None:
    x, _, info = digits
    s0 = NetSpec.for_dataset("resnet8", info, width=0.25).build().eval()
    model = CombinedStudent(s0, [DataDependent()], threshold=0.5).eval()
    with pytest.raises(ExportError, match=f"R1: cannot be exported to {fmt}"):
        export(model, tmp_path, fmt, x)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_bad_sources_are_errors_naming_the_argument(tmp_path: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "api.cli.main", "export", *args],
            capture_output=True,
            text=True,
            timeout=120,
        )

    proc = cli(str(tmp_path), "--format", "onnx")
    assert proc.returncode == 2 and "JOB_OR_FILE" in proc.stderr and "holds no" in proc.stderr
    (tmp_path / "combined_student.pt").write_bytes(b"not a checkpoint")
    proc = cli(str(tmp_path / "combined_student.pt"), "--format", "onnx", "--dataset", "digits")
    assert proc.returncode == 2 and "not a student file" in proc.stderr
    proc = cli("nowhere/x.pt", "--format", "onnx")
    assert proc.returncode == 2 and "no file, run directory or job id" in proc.stderr
    proc = cli(str(tmp_path / "combined_student.pt"), "--format", "tflite")
    assert proc.returncode == 2 and "invalid choice: 'tflite'" in proc.stderr
