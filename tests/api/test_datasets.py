"""/v1/datasets: real ImageFolders of PNGs (scikit-learn's digits) uploaded as zip and tar.gz,
listed with their classes, counts and sizes; archives that could escape, link, inflate or hold
anything but images refused before anything is stored; a job's ``root`` naming an upload. In
process (the ASGI app on a temporary SQLite database), but for one test against a real
``reskd serve``."""

from __future__ import annotations

import io
import json
import os
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sklearn.datasets import load_digits

from api.cli.main import main
from api.http.datasets.listing import listing
from api.http.main import create_app
from api.http.paths import confine
from api.runtime.settings import Settings
from distill.catalog import DATASETS, DatasetEntry, DatasetInfo, Facts, Found, register_dataset
from distill.config import ConfigError
from search.config import RunConfig
from tests.api.service import Service, tiny_config
from tests.distill.cifar_files import write_cifar10

DIGITS = load_digits()
CLASSES = {"seven": 7, "one": 1, "four": 4}  # torchvision's order: four, one, seven
OCTETS = {"Content-Type": "application/octet-stream"}
LIMITS = {
    "max_dataset_bytes": 200_000,
    "max_dataset_unpacked_bytes": 1_000_000,
    "max_dataset_members": 60,
}


def _png(digit: int, index: int, size: int = 8) -> bytes:
    image = np.flatnonzero(DIGITS.target == digit)[index]
    pixels = (DIGITS.images[image] * 15).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels, "L").resize((size, size)).save(out, "PNG")
    return out.getvalue()


def folder(train: int = 5, val: int = 2, split: str = "val") -> dict[str, bytes]:
    """An ImageFolder: ``train`` and ``val`` real digit images per class, as PNG files."""
    files = {}
    for name, digit in CLASSES.items():
        for i in range(train + val):
            files[f"{'train' if i < train else split}/{name}/{i}.png"] = _png(digit, i)
    return files


def zipped(files: dict[str, bytes], top: str = "") -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(top + name, data)
    return out.getvalue()


def tarred(
    files: dict[str, bytes], *, gz: bool = True, extra: tuple[tarfile.TarInfo, ...] = ()
) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz" if gz else "w") as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
        for info in extra:
            t.addfile(info, io.BytesIO(b"\0" * info.size) if info.size else None)
    return out.getvalue()


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    data = tmp_path / "data"
    data.mkdir()
    settings = Settings(artifact_root=tmp_path / "service", data_roots=[data], **LIMITS)
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as c:
        yield c


def _settings(client: TestClient) -> Settings:
    settings: Settings = client.app.state.settings  # type: ignore[attr-defined]
    return settings


def _upload(client: TestClient, name: str, body: bytes) -> Any:
    return client.post("/v1/datasets", params={"name": name}, content=body, headers=OCTETS)


def test_a_zip_and_a_tar_gz_are_stored_and_listed_as_torchvision_reads_them(
    client: TestClient,
) -> None:
    r = _upload(client, "zipped", zipped(folder(), top="mydigits/"))  # under one top folder
    assert r.status_code == 201, r.text
    entry = r.json()
    assert entry["classes"] == ["four", "one", "seven"] and entry["num_classes"] == 3
    assert (entry["train_images"], entry["test_images"]) == (15, 6)
    assert (entry["width"], entry["height"], entry["mixed_sizes"]) == (8, 8, False)
    assert (entry["dataset"], entry["root"], entry["mode"]) == ("imagefolder", "zipped", "L")
    r = _upload(client, "tarred", tarred(folder(train=4, val=3, split="test")))
    assert r.status_code == 201, r.text
    assert (r.json()["train_images"], r.json()["test_images"]) == (12, 9)

    listed = {d["name"]: d for d in client.get("/v1/datasets").json()}
    assert listed["zipped"] == entry
    assert listed["digits"]["train_images"] == 1437 and listed["digits"]["test_images"] == 360
    assert listed["mnist5k"]["kind"] == "shipped" and listed["mnist5k"]["width"] == 28
    stored = _settings(client).datasets_dir
    assert sorted(p.name for p in stored.iterdir()) == ["tarred", "zipped"]  # no leftovers

    from distill.data import load_dataset, num_samples

    bundle = load_dataset("imagefolder", root=stored / "zipped", augment=False, image_size=8)
    assert bundle.train.classes == entry["classes"]  # type: ignore[attr-defined]
    assert num_samples(bundle.train) == 15 and num_samples(bundle.test) == 6


def test_sizes_that_differ_are_flagged_with_the_first_images_size(client: TestClient) -> None:
    files = folder()
    files["train/seven/0.png"] = _png(7, 0, size=16)  # the first class: four, 8x8
    r = _upload(client, "mixed", zipped(files))
    assert r.status_code == 201, r.text
    assert (r.json()["width"], r.json()["height"], r.json()["mixed_sizes"]) == (8, 8, True)


def _bomb_zip() -> bytes:
    files = folder()
    files["train/four/big.png"] = b"\0" * 2_000_000  # deflates to about 2 KB
    return zipped(files)


def _symlink_tar() -> bytes:
    link = tarfile.TarInfo("train/four/link.png")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    return tarred(folder(), extra=(link,))


def _hardlink_tar() -> bytes:
    link = tarfile.TarInfo("train/four/hard.png")
    link.type, link.linkname = tarfile.LNKTYPE, "train/four/0.png"
    return tarred(folder(), extra=(link,))


def _symlink_zip() -> bytes:
    out = io.BytesIO(zipped(folder()))
    with zipfile.ZipFile(out, "a") as z:
        info = zipfile.ZipInfo("train/four/link.png")
        info.external_attr = 0o120777 << 16  # S_IFLNK
        z.writestr(info, "/etc/passwd")
    return out.getvalue()


def _absolute_zip() -> bytes:
    out = io.BytesIO(zipped(folder()))
    with zipfile.ZipFile(out, "a") as z:
        z.writestr(zipfile.ZipInfo("/tmp/train/four/x.png"), _png(4, 9))
    return out.getvalue()


def _pax_bomb() -> bytes:
    """A pax header whose data (20 MB of zeros, 20 KB gzipped) tarfile would read in one go."""
    header = tarfile.TarInfo("pax")
    header.type, header.size = tarfile.XHDTYPE, 20_000_000
    return tarred({}, extra=(header,))


def _many() -> bytes:
    files = folder()
    files |= {f"train/four/more{i}.png": _png(4, 0) for i in range(60)}
    return zipped(files)


def _not_an_image() -> bytes:
    files = {k: v for k, v in folder().items() if not k.startswith("val/four/")}
    return zipped(files | {"val/four/0.png": b"not a png at all"})


# (what is wrong, the archive, the status, what the detail says)
REFUSED: list[tuple[str, Callable[[], bytes], int, str]] = [
    ("../ in a name", lambda: zipped({"train/four/../../../x.png": _png(4, 0)}), 400, "'..'"),
    ("an absolute path", _absolute_zip, 400, "'/tmp/train/four/x.png' is an absolute path"),
    ("a symlink in a tar", _symlink_tar, 400, "'train/four/link.png' is a symbolic link"),
    ("a hard link in a tar", _hardlink_tar, 400, "'train/four/hard.png' is a hard link"),
    ("a symlink in a zip", _symlink_zip, 400, "'train/four/link.png' is a symbolic link"),
    ("a zip bomb", _bomb_zip, 413, "unpack to more than 1000000 bytes"),
    ("a tar.gz bomb", lambda: tarred({"train/four/big.png": b"\0" * 2_000_000}), 413, "1000000"),
    ("a pax header bomb", _pax_bomb, 400, "a tar header holds more than"),
    ("too many members", _many, 413, "more than 60 members"),
    ("a text file", lambda: zipped(folder() | {"train/four/notes.txt": b"x"}), 400, "notes.txt"),
    ("a .png that is none", _not_an_image, 400, "'val/four/0.png' is not an image Pillow reads"),
    (
        "classes that differ",
        lambda: zipped(folder() | {"val/five/0.png": _png(5, 0)}),
        400,
        "only in train/: none; only in val/: five",
    ),
    ("no val/ or test/", lambda: zipped(folder(val=0)), 400, "no val/<class>/<image>"),
    ("a file beside the splits", lambda: zipped(folder() | {"x.png": _png(4, 0)}), 400, "'x.png'"),
    ("no archive", lambda: b"just some bytes", 400, "not a zip, a tar or a gzipped tar"),
    ("a truncated zip", lambda: zipped(folder())[:-30], 400, "damaged or unreadable archive"),
]


@pytest.mark.parametrize(
    ("what", "archive", "status", "says"), REFUSED, ids=[r[0] for r in REFUSED]
)
def test_a_bad_archive_is_refused_and_nothing_is_stored(
    client: TestClient, what: str, archive: Callable[[], bytes], status: int, says: str
) -> None:
    assert _upload(client, "kept", zipped(folder())).status_code == 201
    stored = _settings(client).datasets_dir
    before = sorted(p.relative_to(stored) for p in stored.rglob("*"))
    r = _upload(client, "bad", archive())
    assert r.status_code == status, (what, r.text)
    detail = r.json()["detail"]
    assert says in detail and "\n" not in detail and str(stored) not in detail, detail
    assert sorted(p.relative_to(stored) for p in stored.rglob("*")) == before  # no temporaries
    assert [d["name"] for d in client.get("/v1/datasets").json()] == ["mnist5k", "digits", "kept"]


def test_a_name_taken_is_409_and_the_stored_dataset_stays(client: TestClient) -> None:
    assert _upload(client, "mine", zipped(folder())).status_code == 201
    stored = _settings(client).datasets_dir / "mine"
    files = {p: p.read_bytes() for p in stored.rglob("*") if p.is_file()}
    r = _upload(client, "mine", zipped(folder(train=2, val=1)))
    assert r.status_code == 409 and "'mine' was uploaded already" in r.json()["detail"]
    assert {p: p.read_bytes() for p in stored.rglob("*") if p.is_file()} == files


def test_bodies_over_the_limit_and_bad_names_are_refused(client: TestClient) -> None:
    r = _upload(client, "big", b"\0" * 200_001)  # announced by Content-Length
    assert r.status_code == 413 and "200000 bytes" in r.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        for _ in range(4):
            yield b"\0" * 65536

    r = client.post("/v1/datasets", params={"name": "big"}, content=chunks(), headers=OCTETS)
    assert r.status_code == 413
    for name in ("../up", ".hidden", "a/b", "x" * 65, ""):
        r = _upload(client, name, zipped(folder()))
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "name"], name
    assert not list(_settings(client).datasets_dir.iterdir())  # the temporaries are gone too


def test_data_roots_list_their_image_folders_and_cifar_roots(client: TestClient) -> None:
    data = _settings(client).data_roots[0]
    for name, content in folder(train=3, val=1).items():
        (data / "letters" / name).parent.mkdir(parents=True, exist_ok=True)
        (data / "letters" / name).write_bytes(content)
    (data / "letters" / "train" / "seven" / "README").write_text("not an image: not counted")
    write_cifar10(data / "cifar", per_batch=6, test=5)
    (data / "empty").mkdir()
    found = {d["name"]: d for d in client.get("/v1/datasets").json() if d["source"] == "data_root"}
    assert set(found) == {"letters", "cifar"}
    letters, cifar = found["letters"], found["cifar"]
    assert (letters["dataset"], letters["root"]) == ("imagefolder", str(data / "letters"))
    assert (letters["train_images"], letters["test_images"]) == (9, 3)
    assert letters["classes"] == ["four", "one", "seven"] and letters["problem"] is None
    assert (cifar["kind"], cifar["root"]) == ("cifar10", str(data / "cifar"))
    assert (cifar["train_images"], cifar["test_images"], cifar["num_classes"]) == (30, 5, 10)
    assert cifar["classes"][:2] == ["class0", "class1"] and cifar["width"] == 32
    # an image added changes its class folder, and the listing sees it
    (data / "letters" / "val" / "one" / "9.png").write_bytes(_png(1, 9))
    found = {d["name"]: d for d in client.get("/v1/datasets").json()}
    assert found["letters"]["test_images"] == 4
    # a class folder only under val/ is a problem a job would meet: the listing says so
    (data / "letters" / "val" / "five").mkdir()
    (data / "letters" / "val" / "five" / "0.png").write_bytes(_png(5, 0))
    found = {d["name"]: d for d in client.get("/v1/datasets").json()}
    assert found["letters"]["problem"] == (
        "the classes of train/ and val/ differ: only in train/: none; only in val/: five"
    )


@pytest.fixture
def tallies() -> Iterator[list[Path]]:
    """A plug-in dataset whose data is a ``tallies.txt`` of ``<split> <class>`` lines, one per
    image; yields the files its survey has read."""
    read: list[Path] = []

    def survey(path: Path) -> Found | None:
        file = path / "tallies.txt"
        if not file.is_file():
            return None

        def facts() -> Facts:
            read.append(file)
            rows = [line.split() for line in file.read_text().splitlines()]
            classes = tuple(sorted({c for _, c in rows}))
            train = sum(split == "train" for split, _ in rows)
            return Facts(classes, train, len(rows) - train, 4, 4, False, "L")

        return Found((file.stat().st_mtime_ns,), facts)

    def load(*_: Any) -> Any:
        raise AssertionError("a listing loads no dataset")

    info = DatasetInfo("tallies", 2, 1, 4, (0.5,), (0.5,), True, "tallied images")
    register_dataset(DatasetEntry(info, load, survey=survey))
    try:
        yield read
    finally:
        DATASETS.unregister("tallies")


def test_a_plugin_dataset_with_a_survey_is_listed_under_a_data_root(
    tmp_path: Path, tallies: list[Path]
) -> None:
    data = (tmp_path / "data").resolve()
    (data / "counts").mkdir(parents=True)
    (data / "counts" / "tallies.txt").write_text("train a\ntrain b\ntrain a\ntest b\n")
    (data / "other").mkdir()
    settings = Settings(artifact_root=tmp_path / "service", data_roots=[data], **LIMITS)

    def found() -> list[dict[str, Any]]:
        return [d.model_dump() for d in listing(settings) if d.source == "data_root"]

    (row,) = found()
    assert (row["name"], row["kind"], row["dataset"]) == ("counts", "tallies", "tallies")
    assert (row["root"], row["classes"], row["channels"]) == (str(data / "counts"), ["a", "b"], 1)
    assert (row["train_images"], row["test_images"], row["problem"]) == (3, 1, None)
    assert found() == [row] and len(tallies) == 1  # kept while the file stays the same
    os.utime(data / "counts" / "tallies.txt", ns=(0, 0))
    (row,) = found()
    assert len(tallies) == 2 and row["train_images"] == 3  # read again once it changed


def test_a_failing_plugin_survey_is_a_problem_on_its_row_not_a_failed_listing(
    tmp_path: Path,
) -> None:
    def survey(path: Path) -> Found | None:
        raise OSError(5, "Input/output error")

    def load(*_: Any) -> Any:
        raise AssertionError("a listing loads no dataset")

    info = DatasetInfo("broken", 2, 1, 4, (0.5,), (0.5,), True, "a faulty plug-in")
    register_dataset(DatasetEntry(info, load, survey=survey))
    try:
        data = (tmp_path / "data").resolve()
        (data / "anything").mkdir(parents=True)
        settings = Settings(artifact_root=tmp_path / "service", data_roots=[data], **LIMITS)
        rows = [d.model_dump() for d in listing(settings) if d.source == "data_root"]
    finally:
        DATASETS.unregister("broken")
    broken = [r["problem"] for r in rows if r["dataset"] == "broken"]  # the root and its folder
    assert broken and set(broken) == {"its survey failed: OSError: [Errno 5] Input/output error"}
    assert {r.dataset for r in listing(settings)} >= {"mnist5k", "digits"}  # the rest listed


def test_a_job_root_names_an_upload_or_a_folder_under_a_data_root(client: TestClient) -> None:
    settings = _settings(client)
    assert _upload(client, "mydigits", zipped(folder())).status_code == 201
    config = RunConfig.model_validate(tiny_config(dataset="imagefolder", root="mydigits"))
    assert confine(config, settings).root == str((settings.datasets_dir / "mydigits").resolve())
    inside = settings.data_roots[0] / "letters"
    config = RunConfig.model_validate(tiny_config(dataset="imagefolder", root=str(inside)))
    assert confine(config, settings).root == str(inside.resolve())
    for refused in ("missing", "/etc", "../datasets", str(settings.artifact_root)):
        config = RunConfig.model_validate(tiny_config(dataset="imagefolder", root=refused))
        with pytest.raises(ConfigError) as info:
            confine(config, settings)
        message = info.value.errors[0]["msg"]
        assert "uploaded: mydigits" in message and str(settings.data_roots[0]) in message
        assert "reskd serve --data-root" in message
    r = client.post(
        "/v1/jobs", json={"config": tiny_config(dataset="imagefolder", root="mydigits")}
    )
    assert r.status_code == 201, r.text
    assert r.json()["config"]["root"] == str((settings.datasets_dir / "mydigits").resolve())


def test_serve_takes_data_roots_beside_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    assert "--data-root DIR" in capsys.readouterr().out
    seen: list[Settings] = []
    monkeypatch.setattr("api.runtime.serve.serve", lambda settings, workers: seen.append(settings))
    monkeypatch.setenv("RESKD_DATA_ROOTS", json.dumps([str(tmp_path / "env")]))
    (tmp_path / "cli").mkdir()
    assert main(["serve", "--data-root", str(tmp_path / "cli")]) == 0
    assert seen[0].data_roots == [tmp_path / "env", (tmp_path / "cli").resolve()]
    assert main(["serve", "--data-root", str(tmp_path / "nope")]) == 2
    assert f"--data-root: {tmp_path / 'nope'} is not a directory" in capsys.readouterr().err


@pytest.mark.slow  # starts a server
def test_reskd_datasets_lists_a_services_uploads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    svc = Service(tmp_path / "svc", workers=0)
    try:
        r = svc.http.post(
            "/v1/datasets",
            params={"name": "mydigits"},
            content=tarred(folder()),
            headers={"Content-Type": "application/x-tar"},
        )
        assert r.status_code == 201, r.text
        assert main(["datasets", "--url", svc.url, "--json"]) == 0
        listed = json.loads(capsys.readouterr().out)
        assert [d["name"] for d in listed] == ["mnist5k", "digits", "mydigits"]
        assert main(["datasets", "--url", svc.url]) == 0
        table = capsys.readouterr().out
        assert "mydigits" in table and "imagefolder" in table and "8x8" in table
    finally:
        svc.stop()
    assert main(["datasets"]) == 0  # without --url: the local catalog, as before
    assert "cifar100" in capsys.readouterr().out


def test_the_image_suffixes_are_those_torchvisions_image_folder_reads() -> None:
    from torchvision.datasets.folder import IMG_EXTENSIONS

    from distill.datasets.folders import IMAGE_SUFFIXES

    assert sorted(IMAGE_SUFFIXES) == sorted(IMG_EXTENSIONS)
