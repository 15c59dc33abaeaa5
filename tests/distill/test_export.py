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
from distill.catalog import dataset_info
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


@pytest.mark.slow  # trains and exports real students (seconds each)
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


@pytest.mark.slow  # trains and exports real students (seconds each)
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


@pytest.mark.slow  # trains and exports real students (seconds each)
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


# --------------------------------------------------------------------------------------------
# What an export ships: the stage best on D_v, the preprocessing, image files in, classes out
# --------------------------------------------------------------------------------------------

# Run as `python -I -c BLOCKED predict.py IMAGE...`: predict.py with this package and torch made
# unimportable (the editable install would otherwise find them even under -I).
BLOCKED = """
import runpy, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"torch", "torchvision", "distill", "space", "search", "api", "db"}:
            raise ImportError(f"blocked: {name}")
sys.meta_path.insert(0, Block())
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def student_for(
    preprocessing: dict, classes: int, *, stages: int = 2, **fields: object
) -> CombinedStudent:
    """S0 and ``stages`` res-students (ResNet-8, width 0.25) for the preprocessing's input."""
    torch.manual_seed(0)
    shape = dict(in_chans=preprocessing["channels"], input_size=preprocessing["image_size"])
    specs = [NetSpec("resnet8", 0.25, classes, **shape) for _ in range(stages + 1)]
    nets = [s.build().eval() for s in specs]
    for net in nets[1:]:
        with torch.no_grad():
            for p in net.parameters():
                p.mul_(0.5)
    return CombinedStudent(
        nets[0],
        nets[1:],
        specs=specs,
        mflops=[1.0] * (stages + 1),
        preprocessing=preprocessing,
        **fields,  # type: ignore[arg-type]
    ).eval()


def reference_input(path: Path, pre: dict) -> Tensor:
    """torchvision's view of an image file under ``pre``: short side, centre crop, normalise."""
    from PIL import Image
    from torchvision.transforms import v2

    size = pre["image_size"]
    with Image.open(path) as image:
        image = image.convert(pre["color"])
    steps = [
        v2.Resize(pre["resize"] or size, antialias=True),
        v2.CenterCrop(size),
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(pre["mean"], pre["std"]),
    ]
    return v2.Compose(steps)(image)


def write_images(root: Path, mode: str, sizes: list[tuple[int, int, str]], seed: int) -> list[Path]:
    """Real image files of random pixels: (width, height, suffix) each."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    for k, (w, h, suffix) in enumerate(sizes):
        pixels = rng.integers(0, 256, size=(h, w, channels), dtype=np.uint8)
        image = Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode)
        path = root / f"img{k}{suffix}"
        image.save(path, quality=95) if suffix == ".jpg" else image.save(path)
        paths.append(path)
    return paths


GRAY = {"image_size": 8, "channels": 1, "color": "L", "mean": [0.4], "std": [0.2], "resize": None}
RGB = {
    "image_size": 8,
    "channels": 3,
    "color": "RGB",
    "mean": [0.5, 0.4, 0.3],
    "std": [0.2, 0.25, 0.3],
    "resize": 10,
}
CASES = {
    # 8x8 files as they are; a larger, a smaller and a non-square one resized and cropped
    "gray": (GRAY, "L", [(8, 8, ".png")] * 12 + [(20, 12, ".png"), (5, 9, ".png")]),
    # short side to 10, centre 8x8: PNG, JPEG, and an RGBA PNG converted to RGB
    "rgb": (RGB, "RGB", [(10, 14, ".png")] * 10 + [(16, 16, ".jpg"), (9, 10, ".png")]),
}


@pytest.mark.parametrize(
    "case",
    ["rgb", pytest.param("gray", marks=pytest.mark.slow)],  # each exports and predicts
)
def test_predict_classifies_image_files_as_pytorch_does_with_and_without_torch(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from api.cli.main import main

    pre, mode, sizes = CASES[case]
    paths = write_images(tmp_path / "images", mode, sizes, seed=len(case))
    if case == "rgb":
        paths += write_images(tmp_path / "images-rgba", "RGBA", [(8, 8, ".png")], seed=3)
    names = [f"class-{c}" for c in range(5)]
    model = student_for(pre | {"class_names": names}, classes=5)
    x = torch.stack([reference_input(p, pre) for p in paths])
    if case == "gray":  # the files of the networks' size: pixels / 255, normalised, no resampling
        from PIL import Image

        raw = np.stack([np.asarray(Image.open(p), dtype=np.float32) for p in paths[:12]])
        np.testing.assert_allclose(x[:12, 0].numpy(), (raw / 255 - 0.4) / 0.2, atol=1e-5)
    with torch.no_grad():
        model.threshold = float(energy(model.s0(x)).median())
        expected = model.adaptive(x)
    assert 0 < int((expected.used == 0).sum()) < len(x)  # some stop at S0, others go on
    out = tmp_path / "export"
    manifest, _ = export(model, out, "onnx", x)
    stored = json.loads(manifest.read_text())
    assert stored["preprocessing"] == pre and stored["class_names"] == names
    assert stored["stages"] == 2 and stored["threshold"] == model.threshold

    args = [str(p) for p in paths]
    assert main(["predict", str(out), *args]) == 0
    printed = capsys.readouterr().out
    lines = printed.splitlines()
    assert [line.split("\t") for line in lines[:-1]] == [
        [str(p), names[int(c)], f"res-students {int(u)}"]
        for p, c, u in zip(paths, expected.logits.argmax(1), expected.used, strict=True)
    ]
    mean = float(expected.used.float().mean())
    assert lines[-1] == f"mean res-students used: {mean:.2f} of 2 over {len(paths)} image(s)"

    alone = subprocess.run(  # no torch, no reskd: onnxruntime, NumPy and Pillow
        [sys.executable, "-I", "-c", BLOCKED, str(out / "predict.py"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert alone.returncode == 0, alone.stderr
    assert alone.stdout == printed

    assert main(["predict", str(out), *args[:2], "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["predictions"][1] == {
        "path": args[1],
        "class": names[int(expected.logits[1].argmax())],
        "class_index": int(expected.logits[1].argmax()),
        "res_students": int(expected.used[1]),
    }


def save_run(run: Path, model: CombinedStudent, dataset: str, **config: object) -> Path:
    """A run directory as ``reskd run`` leaves it: the student and config.json."""
    run.mkdir(parents=True, exist_ok=True)
    model.save(run / "combined_student.pt")
    (run / "config.json").write_text(json.dumps({"dataset": dataset} | config))
    return run


def digits_preprocessing(**changes: object) -> dict:
    info = dataset_info("digits")
    return {
        "image_size": 8,
        "channels": 1,
        "color": "L",
        "mean": list(info.mean),
        "std": list(info.std),
        "resize": None,
        "class_names": [
            "zero",
            "one",
            "two",
            "three",
            "four",
            "five",
            "six",
            "seven",
            "eight",
            "nine",
        ],
    } | changes


@pytest.mark.slow  # trains and exports real students (seconds each)
def test_export_ships_the_stage_best_on_dv_unless_stages_says(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from api.cli.main import main

    model = student_for(
        digits_preprocessing(),
        classes=10,
        threshold=0.6,
        thresholds=[0.2, 0.4, 0.6],
        deploy_stage=1,
    )
    run = save_run(tmp_path / "run", model, "digits")

    def exported(*args: str) -> dict:
        out = tmp_path / f"out{len(list(tmp_path.iterdir()))}"
        assert main(["export", str(run), "--out", str(out), "--samples", "32", *args]) == 0
        return json.loads((out / "manifest.json").read_text())

    shipped = exported()  # a run directory, no --dataset: the run's config.json says digits
    said = capsys.readouterr().out
    assert [p["name"] for p in shipped["parts"]] == ["S0", "R1"]
    assert shipped["stages"] == 1 and shipped["threshold"] == 0.4
    assert shipped["mflops"] == [1.0, 1.0] and shipped["model_format"] == "onnx"
    assert shipped["class_names"][7] == "seven" and shipped["preprocessing"]["mean"] == [0.3053]
    assert (
        "shipping S1 (S0 + R1) of the 2 res-students in the file: S1 was the best on the "
        "validation set D_v (--stages 2 ships all)\n" in said
    )
    assert "checked on 32 digits test images" in said and "predict.py IMAGE..." in said

    everything = exported("--stages", "2")
    assert [p["name"] for p in everything["parts"]] == ["S0", "R1", "R2"]
    assert everything["threshold"] == 0.6 and "shipping" not in capsys.readouterr().out
    alone = exported("--stages", "0")
    assert [p["name"] for p in alone["parts"]] == ["S0"] and alone["stages"] == 0
    assert "shipping S0 (S0 alone) of the 2 res-students in the file: as --stages asked" in (
        capsys.readouterr().out
    )
    assert main(["export", str(run), "--stages", "3", "--out", str(tmp_path / "x")]) == 2
    assert (
        f"--stages: must be in 0..2 (the res-students in {run / 'combined_student.pt'}), got 3"
        in capsys.readouterr().err
    )
    assert not (tmp_path / "x").exists()

    model.deploy_stage = None  # no stage chosen: the whole student
    model.save(run / "combined_student.pt")
    assert [p["name"] for p in exported()["parts"]] == ["S0", "R1", "R2"]


@pytest.mark.slow  # trains and exports real students (seconds each)
def test_an_older_student_file_takes_the_datasets_preprocessing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from api.cli.main import main

    model = student_for(digits_preprocessing(), classes=10)
    model.preprocessing = None  # a file written before students carried it
    path = tmp_path / "combined_student.pt"
    model.save(path)
    out = tmp_path / "out"
    args = ["export", str(path), "--dataset", "digits", "--samples", "16", "--out", str(out)]
    assert main(args) == 0
    said = capsys.readouterr().out.splitlines()
    assert said[0] == (
        "preprocessing: combined_student.pt carries none (written before it did); using "
        "digits's: 1x8x8, mean [0.3053], std [0.376], classes 0..9"
    )
    stored = json.loads((out / "manifest.json").read_text())
    assert stored["preprocessing"] == {
        "image_size": 8,
        "channels": 1,
        "color": "L",
        "mean": [0.3053],
        "std": [0.376],
        "resize": None,
    }
    assert stored["class_names"] == [str(c) for c in range(10)]

    # the run's preprocessing.json, where it wrote one beside the file, comes first
    (tmp_path / "preprocessing.json").write_text(json.dumps(digits_preprocessing()))
    assert main(args) == 0
    assert "carries none" not in capsys.readouterr().out
    stored = json.loads((out / "manifest.json").read_text())
    assert stored["class_names"][:2] == ["zero", "one"]


@pytest.mark.slow  # trains and exports real students (seconds each)
def test_a_dataset_read_from_a_root_is_checked_on_the_runs_root_or_root(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from api.cli.main import main
    from tests.distill.cifar_files import write_cifar10

    info = dataset_info("cifar10")
    pre = {"image_size": 32, "channels": 3, "color": "RGB", "mean": list(info.mean)}
    model = student_for(pre | {"std": list(info.std), "resize": None}, classes=10, stages=1)
    gone = tmp_path / "gone"
    run = save_run(tmp_path / "run", model, "cifar10", root=str(gone))
    out = tmp_path / "out"
    assert main(["export", str(run), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert (
        "--root: the export is checked on cifar10 test images, read from a local directory, "
        f"and the run's root {gone} is not here; give it with --root DIR, or check on another "
    ) in err
    assert "--dataset (one of " in err and not out.exists()

    write_cifar10(tmp_path / "cifar")
    assert main(["export", str(run), "--out", str(out), "--root", str(tmp_path / "cifar")]) == 0
    assert "checked on 5 cifar10 test images" in capsys.readouterr().out
    save_run(run, model, "cifar10", root=str(tmp_path / "cifar"))  # the run's root is here
    assert main(["export", str(run), "--out", str(tmp_path / "out2")]) == 0
    assert "checked on 5 cifar10 test images" in capsys.readouterr().out


@pytest.mark.slow  # exports a model
def test_bad_preprocessing_images_and_directories_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from api.cli.main import main

    run = tmp_path / "run"
    for changes, says in [
        ({"color": "CMYK"}, "preprocessing.color: must be 'L' or 'RGB', got 'CMYK'"),
        ({"mean": [0.1, 0.2]}, "preprocessing.mean: must be a list of 1 numbers"),
        ({"resize": 4}, "preprocessing.resize: must be null or an integer >= image_size (8)"),
        ({"class_names": ["a", "b"]}, "class_names: must be 10 strings"),
    ]:
        save_run(run, student_for(digits_preprocessing(**changes), classes=10), "digits")
        assert main(["export", str(run), "--samples", "8", "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and says in err, err
        assert not (tmp_path / "o").exists()

    save_run(run, student_for(digits_preprocessing(), classes=10), "digits")
    out = tmp_path / "out"
    assert main(["export", str(run), "--samples", "8", "--out", str(out)]) == 0
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("not pixels")
    assert main(["predict", str(out), str(not_an_image)]) == 2
    assert f"IMAGE: {not_an_image} is not an image file Pillow can read" in (
        capsys.readouterr().err
    )
    alone = subprocess.run(
        [sys.executable, "-I", str(out / "predict.py"), str(not_an_image)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert alone.returncode == 2 and alone.stderr.startswith(
        f"predict.py: error: IMAGE: {not_an_image} is not an image file"
    )
    assert main(["predict", str(tmp_path), str(not_an_image)]) == 2
    assert f"DIR: {tmp_path} holds no manifest.json" in capsys.readouterr().err
