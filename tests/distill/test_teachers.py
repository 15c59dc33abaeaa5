"""Teachers from anywhere and preprocessing as data: kinds, checkpoint checks in one line, the
registries' errors, and the data options (image size, mean/std) a run config takes."""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from distill.config import ConfigError
from distill.data import DatasetError, load_dataset, peek_info
from distill.teachers import (
    TEACHER_KINDS,
    CheckpointError,
    TeacherKind,
    check_teacher_file,
    load_program,
    parse_teacher,
    read_state_dict,
)
from search.config import RunConfig

BASE = {"dataset": "digits", "teacher": "resnet8", "student": "resnet8", "res_students": ["resnet8"],
        "max_stages": 1}  # fmt: skip


def config(**fields: object) -> RunConfig:
    return RunConfig.from_dict(BASE | fields)


def test_torchvisions_own_imagenet_file_loads_as_it_is_and_a_wrong_one_is_one_line(
    tmp_path: Path,
) -> None:
    imagenet = tmp_path / "resnet18-f37072fd.pth"  # the name torchvision's download gives it
    torch.save(torchvision.models.resnet18().state_dict(), imagenet)  # 1000 classes
    checked = check_teacher_file(
        imagenet, "torchvision:resnet18", num_classes=None, input_shape=(3, 224, 224)
    )
    assert "fits torchvision:resnet18 (1000 classes)" in checked
    with pytest.raises(CheckpointError) as wrong:
        check_teacher_file(imagenet, "torchvision:resnet34", num_classes=None, input_shape=(3, 224, 224))  # fmt: skip
    text = str(wrong.value)
    assert "\n" not in text and text.startswith("does not fit torchvision:resnet34: ")
    assert "keys differ" in text and "missing (layer1.2." in text
    with pytest.raises(
        CheckpointError, match="its classifier has 1000 classes; the dataset has 10"
    ):
        check_teacher_file(
            imagenet, "torchvision:resnet18", num_classes=10, input_shape=(3, 32, 32)
        )
    # the zoo's ResNet-18 is told a torchvision file when it meets one
    with pytest.raises(ConfigError, match=r"use teacher: \{torchvision: resnet18\}"):
        RunConfig.from_dict(BASE | {"dataset": "cifar10", "root": str(tmp_path),
                                    "teacher": "resnet18", "teacher_checkpoint": str(imagenet)})  # fmt: skip


def test_a_state_dict_in_safetensors_or_under_a_key_reads_the_same(tmp_path: Path) -> None:
    state = torchvision.models.get_model("resnet18", num_classes=10).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "t.safetensors")
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "t.pt")
    for name in ("t.safetensors", "t.pt"):
        read = read_state_dict(tmp_path / name)
        assert read.keys() == state.keys()
        assert all(torch.equal(read[k], state[k]) for k in state)
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a state dict torch loads weights-only"):
        read_state_dict(tmp_path / "bad.pt")


def test_a_timm_teacher_is_built_and_checked_by_name(tmp_path: Path) -> None:
    timm = pytest.importorskip("timm", reason="the optional extra timm")
    net = timm.create_model("resnet18", pretrained=False, num_classes=10)
    torch.save(net.state_dict(), tmp_path / "timm.pt")
    cfg = config(teacher={"timm": "resnet18"}, teacher_checkpoint=str(tmp_path / "timm.pt"))
    assert cfg.teacher.kind == "timm"
    with pytest.raises(ConfigError, match=r"teacher_checkpoint: does not fit timm:resnet34"):
        config(teacher={"timm": "resnet34"}, teacher_checkpoint=str(tmp_path / "timm.pt"))
    with pytest.raises(ConfigError, match="unknown timm model 'no_such_net'"):
        config(teacher={"timm": "no_such_net"}, teacher_checkpoint=str(tmp_path / "timm.pt"))


def test_a_program_is_a_frozen_black_box_that_gives_logits(tmp_path: Path) -> None:
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    torch.jit.save(torch.jit.script(net), str(tmp_path / "t.ts"))
    batch = {"input": {0: torch.export.Dim("batch", min=1, max=1024)}}
    program = torch.export.export(net, (torch.zeros(2, 1, 8, 8),), dynamic_shapes=batch)
    torch.export.save(program, str(tmp_path / "t.pt2"))
    fixed = torch.export.export(net, (torch.zeros(2, 1, 8, 8),))  # takes batches of 2 only
    torch.export.save(fixed, str(tmp_path / "fixed.pt2"))
    x = torch.randn(3, 1, 8, 8)
    for kind, name in (("torchscript", "t.ts"), ("exported-program", "t.pt2")):
        box = load_program(tmp_path / name, kind).train()
        assert not box.training and torch.allclose(box(x), net(x))
        cfg = config(teacher={"program": kind}, teacher_checkpoint=str(tmp_path / name))
        assert cfg.teacher.kind == kind
    with pytest.raises(
        ConfigError, match="teacher_checkpoint: the torchscript file of the teacher"
    ):
        config(teacher={"program": "torchscript"})
    with pytest.raises(ConfigError, match="feature maps"):
        RunConfig.from_dict({"dataset": "digits", "method": "assistant", "student": "resnet8",
                             "teacher": {"program": "torchscript"},
                             "teacher_checkpoint": str(tmp_path / "t.ts")})  # fmt: skip
    wide = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 7))
    torch.jit.save(torch.jit.script(wide), str(tmp_path / "seven.ts"))
    with pytest.raises(ConfigError, match="gives 7 classes; digits has 10"):
        config(teacher={"program": "torchscript"}, teacher_checkpoint=str(tmp_path / "seven.ts"))
    assert set(TEACHER_KINDS) == {"zoo", "torchvision", "timm", "torchscript", "exported-program"}


def test_unknown_names_are_errors_listing_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="unknown torchvision classification model 'resnet7'"):
        config(teacher={"torchvision": "resnet7"})
    with pytest.raises(ConfigError, match="unknown teacher kind 'onnx'; known: zoo, torchvision"):
        from distill.teachers import teacher_kind

        teacher_kind("onnx")
    with pytest.raises(DatasetError, match="unknown dataset 'svhn'; allowed: mnist5k, digits"):
        load_dataset("svhn")
    with pytest.raises(ConfigError, match="dataset"):
        config(dataset="svhn")


def test_data_options_set_the_size_and_normalisation_the_networks_see() -> None:
    cfg = config(image_size=16, mean=[0.5], std=[0.25])
    info = cfg.data_info()
    assert info.input_shape == (1, 16, 16) and info.mean == (0.5,) and info.std == (0.25,)
    data = load_dataset("digits", augment=False, image_size=16, mean=[0.5], std=[0.25])
    x, _ = data.test[0]
    assert x.shape == (1, 16, 16) and data.info.preprocessing.to_dict()["mean"] == [0.5]
    assert data.info.preprocessing.class_names == tuple(str(i) for i in range(10))
    with pytest.raises(ConfigError, match=r"mean: 1 value\(s\): digits has 1 channel"):
        config(mean=[0.5, 0.5, 0.5], std=[0.2, 0.2, 0.2])
    with pytest.raises(ConfigError, match="mean and std go together"):
        config(mean=[0.5])
    with pytest.raises(ConfigError, match="std: values > 0"):
        config(mean=[0.5], std=[0.0])
    with pytest.raises(ConfigError, match="root: none: digits ships with a package"):
        config(root="/tmp")


def test_an_image_folder_keeps_its_size_and_names_its_classes(tmp_path: Path) -> None:
    from tests.own.digits_folder import NAMES, write_folder

    root = write_folder(tmp_path, per_class=6)
    info = peek_info("imagefolder", root=root)
    assert info.input_shape == (3, 16, 16) and info.classes == tuple(sorted(NAMES))
    data = load_dataset("imagefolder", root=root, augment=False)
    assert data.test[0][0].shape == (3, 16, 16) and data.info.class_names == tuple(sorted(NAMES))
    resized = load_dataset("imagefolder", root=root, augment=True, image_size=24)
    assert resized.train[0][0].shape == (3, 24, 24) and resized.test[0][0].shape == (3, 24, 24)


def test_the_gate_stops_a_given_teacher_near_chance_and_warns_when_allowed(tmp_path: Path) -> None:
    from distill.models import NetSpec
    from search.pipeline import run

    torch.manual_seed(0)
    untrained = NetSpec("resnet8", 0.25, 10, 1, 8).build()  # near chance: 10 classes
    torch.save(untrained.state_dict(), tmp_path / "t.pt")
    raw = BASE | {"teacher": {"model": "resnet8", "width": 0.25},
                  "teacher_checkpoint": str(tmp_path / "t.pt"), "max_stages": 0,
                  "res_students": [], "val_size": 100, "preset": "cpu-tiny"}  # fmt: skip
    with pytest.raises(
        ConfigError, match=r"teacher_checkpoint: the teacher scores .*% on D_v, under 2x chance"
    ):
        run(RunConfig.from_dict(raw), out_dir=tmp_path / "a", progress=False, log=lambda _: None)
    report = run(
        RunConfig.from_dict(raw | {"allow_weak_teacher": True, "train": {"epochs": 1}}),
        out_dir=tmp_path / "b", progress=False, log=lambda _: None,
    )  # fmt: skip
    assert any("under 2x chance" in w for w in report.warnings)
    assert report.to_dict()["teacher"]["val_accuracy"] < 0.2


def test_teacher_kinds_are_entry_points_and_one_registered_in_code_is_used_by_name(
    tmp_path: Path,
) -> None:
    assert list(TEACHER_KINDS) == ["zoo", "torchvision", "timm", "torchscript", "exported-program"]
    assert {e.name for e in entry_points(group="reskd.teachers")} == set(TEACHER_KINDS)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    torch.save(net, tmp_path / "t.pickle")  # a whole module, pickled: a plug-in's own format
    kind = TeacherKind("pickled", "a pickled module (black box)", False,
                       load=lambda path: torch.load(path, weights_only=False))  # fmt: skip
    TEACHER_KINDS.register(kind.name, kind)
    try:
        assert parse_teacher("pickled") == ("pickled", None)
        checked = check_teacher_file(
            tmp_path / "t.pickle", "pickled", num_classes=10, input_shape=(1, 8, 8)
        )
        assert checked == "a pickled program giving 10 classes"
        x = torch.randn(3, 1, 8, 8)
        assert torch.allclose(load_program(tmp_path / "t.pickle", "pickled")(x), net(x))
        with pytest.raises(CheckpointError, match="known kinds: zoo, .*exported-program, pickled"):
            parse_teacher("onnx:net")
    finally:
        TEACHER_KINDS.unregister("pickled")
