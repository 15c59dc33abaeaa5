"""Faults of the HTTP front, one family at a time: uploads that would inflate inside the API
process, cross-site requests to a token-less service, parser edges (deep or wide JSON, NUL
characters), and connections that never finish their request. In process (the ASGI app on a
temporary SQLite database), but for the connection tests, which need a real ``reskd serve``."""

from __future__ import annotations

import io
import json
import socket
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from fastapi.testclient import TestClient

from api.http.main import create_app
from api.runtime.serve import uvicorn_options
from api.runtime.settings import Settings
from tests.api.service import Service, tiny_config
from tests.waiting import wait_until

OCTETS = {"Content-Type": "application/octet-stream"}
LIMITS = {"max_checkpoint_bytes": 4 << 20, "max_dataset_bytes": 4 << 20}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(artifact_root=tmp_path / "service", **LIMITS)
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as c:
        yield c


def _stored(client: TestClient) -> list[str]:
    settings: Settings = client.app.state.settings  # type: ignore[attr-defined]
    folder = settings.checkpoints_dir
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def _zip(members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=compression) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return out.getvalue()


def _saved(value: Any) -> dict[str, bytes]:
    """The members of the zip ``torch.save(value)`` writes."""
    buffer = io.BytesIO()
    torch.save(value, buffer)
    with zipfile.ZipFile(buffer) as z:
        return {i.filename: z.read(i) for i in z.infolist()}


def _upload(client: TestClient, body: bytes, **params: str) -> httpx.Response:
    return client.post(
        "/v1/checkpoints", params={"name": "t.pt", **params}, content=body, headers=OCTETS
    )


# 1. uploads that inflate


def test_a_deflated_checkpoint_is_refused_before_torch_inflates_it(client: TestClient) -> None:
    members = _saved({"w": torch.zeros(1 << 19)})  # 2 MiB of zeros (the limit is 4): ~2 KiB
    body = _zip(members, zipfile.ZIP_DEFLATED)
    assert len(body) < 16 << 10
    r = _upload(client, body)
    assert r.status_code == 400, r.text
    assert "compressed" in r.json()["detail"] and "torch.save" in r.json()["detail"]
    assert _stored(client) == []
    # the same state dict as torch.save wrote it (stored) is kept
    r = _upload(client, _zip(_saved({"w": torch.zeros(16)})))
    assert r.status_code == 201, r.text


def test_a_checkpoint_whose_members_declare_more_than_the_limit_is_413(
    client: TestClient,
) -> None:
    body = bytearray(_zip(_saved({"w": torch.zeros(16)})))
    end = body.rfind(b"PK\x05\x06")
    central = int.from_bytes(body[end + 16 : end + 20], "little")
    body[central + 24 : central + 28] = (1 << 31).to_bytes(4, "little")  # its declared size
    r = _upload(client, bytes(body))
    assert r.status_code == 413, r.text
    assert str(LIMITS["max_checkpoint_bytes"]) in r.json()["detail"]
    assert _stored(client) == []


def test_a_torchscript_program_and_its_compressed_code_are_kept(client: TestClient) -> None:
    program = torch.jit.script(torch.nn.Linear(3, 2))
    buffer = io.BytesIO()
    torch.jit.save(program, buffer)
    with zipfile.ZipFile(buffer) as z:
        assert {i.compress_type for i in z.infolist()} == {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED}
    r = client.post(
        "/v1/checkpoints",
        params={"name": "p.ts", "teacher": "torchscript"},
        content=buffer.getvalue(),
        headers=OCTETS,
    )
    assert r.status_code == 201, r.text


def test_a_dataset_archive_that_declares_far_more_than_its_size_is_413(
    client: TestClient,
) -> None:
    members = {f"{s}/c/0.png": bytes(20 << 20) for s in ("train", "val")}  # 40 MiB of zeros
    body = _zip(members, zipfile.ZIP_DEFLATED)
    r = client.post("/v1/datasets", params={"name": "bomb"}, content=body, headers=OCTETS)
    assert r.status_code == 413, r.text
    assert "times the archive's" in r.json()["detail"]


# 2. cross-site requests


def _queued(client: TestClient) -> int:
    r = client.post("/v1/jobs", json={"config": tiny_config()})
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


@pytest.mark.parametrize(
    ("headers", "named"),
    [
        ({"Origin": "http://evil.example"}, "http://evil.example"),
        ({"Origin": "null"}, "null"),
        ({"Origin": "http://127.0.0.1:9999"}, "http://127.0.0.1:9999"),
        ({"Sec-Fetch-Site": "cross-site"}, "Sec-Fetch-Site"),
    ],
)
def test_a_cross_site_request_changes_nothing(
    client: TestClient, headers: dict[str, str], named: str
) -> None:
    job = _queued(client)
    r = client.post(f"/v1/jobs/{job}/cancel", headers=headers)
    assert r.status_code == 403, r.text
    assert named in r.json()["detail"]
    r = client.post("/v1/jobs", json={"config": tiny_config()}, headers=headers)
    assert r.status_code == 403
    assert client.get(f"/v1/jobs/{job}").json()["state"] == "queued"
    assert client.get("/v1/jobs").json()["total"] == 1
    # the service's own pages (the dashboard) send its own origin
    r = client.post(f"/v1/jobs/{job}/cancel", headers={"Origin": "http://127.0.0.1"})
    assert r.status_code == 200 and r.json()["state"] == "cancelled"


@pytest.mark.parametrize("kind", ["text/plain", "application/x-www-form-urlencoded", None])
def test_an_upload_as_anything_but_octets_is_415(client: TestClient, kind: str | None) -> None:
    body = _zip(_saved({"w": torch.zeros(16)}))
    headers = {"Content-Type": kind} if kind else {}
    r = client.post("/v1/checkpoints", content=body, headers=headers)
    assert r.status_code == 415, r.text
    assert "application/octet-stream" in r.json()["detail"]
    r = client.post("/v1/datasets", params={"name": "x"}, content=body, headers=headers)
    assert r.status_code == 415, r.text
    assert _stored(client) == []


def test_forwarded_headers_are_trusted_only_from_the_proxies_named() -> None:
    assert uvicorn_options(Settings())["proxy_headers"] is False
    options = uvicorn_options(Settings(trusted_proxies=["10.0.0.7"]))
    assert options["proxy_headers"] is True and options["forwarded_allow_ips"] == ["10.0.0.7"]


# 3. parser edges


def _posted(client: TestClient, raw: bytes) -> httpx.Response:
    return client.post("/v1/jobs", content=raw, headers={"Content-Type": "application/json"})


@pytest.mark.parametrize("depth", [200, 1000, 50_000])
def test_deeply_nested_json_is_a_422_naming_the_depth(client: TestClient, depth: int) -> None:
    raw = b'{"config": ' + b"[" * depth + b"]" * depth + b"}"
    r = _posted(client, raw)
    assert r.status_code == 422, r.text[:500]
    [problem] = r.json()["detail"]
    assert problem["loc"] == ["body"] and "nested" in problem["msg"]


def test_a_body_with_100k_keys_is_413_before_validation(client: TestClient) -> None:
    raw = json.dumps({str(i): 0 for i in range(100_000)}, separators=(",", ":")).encode()
    assert len(raw) < 1 << 20  # under the body limit
    r = _posted(client, raw)
    assert r.status_code == 413, r.text[:500]
    assert "more than 20000 members" in r.json()["detail"]


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"config": tiny_config(teacher_checkpoint="a\x00b.pt")}, ["config", "teacher_checkpoint"]),
        ({"config": tiny_config(), "name": "x\x00"}, ["name"]),
        ({"config": tiny_config(root="data\x00")}, ["config", "root"]),
        ({"config": {**tiny_config(), "se\x00ed": 1}}, ["config", "se\x00ed"]),
    ],
)
def test_nul_in_any_string_of_a_body_is_a_422_naming_the_field(
    client: TestClient, body: dict[str, Any], loc: list[str]
) -> None:
    r = client.post("/v1/jobs", json=body)
    assert r.status_code == 422, r.text
    [problem] = r.json()["detail"]
    assert problem["loc"] == ["body", *loc] and "NUL" in problem["msg"]
    assert client.get("/v1/jobs").json()["total"] == 0


@pytest.mark.parametrize("url", ["/v1/jobs?dataset=a%00b", "/v1/checkpoints?x%00=1"])
def test_nul_in_a_query_parameter_is_a_422_naming_it(client: TestClient, url: str) -> None:
    r = client.get(url)
    assert r.status_code == 422, r.text
    [problem] = r.json()["detail"]
    assert problem["loc"][0] == "query" and "NUL" in problem["msg"]


# 4. connections, against a real server


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    env = {
        "RESKD_MAX_STREAMS_PER_CLIENT": "1",
        "RESKD_REQUEST_HEADER_SECONDS": "3",
        "RESKD_REQUEST_IDLE_SECONDS": "3",
        "RESKD_MAX_CONNECTIONS": "8",
    }
    svc = Service(tmp_path_factory.mktemp("faults"), workers=0, extra_env=env)
    try:
        yield svc
    finally:
        svc.stop()


def _answer(sock: socket.socket) -> bytes:
    """What the server sends until it closes the connection (a timeout fails the test)."""
    sock.settimeout(60)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


@pytest.mark.slow
def test_a_half_sent_request_is_answered_408_and_closed(service: Service) -> None:
    with socket.create_connection(("127.0.0.1", service.port)) as sock:
        sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # no blank line
        answer = _answer(sock)
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b"3 s" in answer


@pytest.mark.slow
def test_headers_past_the_most_bytes_are_431(service: Service) -> None:
    with socket.create_connection(("127.0.0.1", service.port)) as sock:
        sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 70_000)
        answer = _answer(sock)
    assert answer.startswith(b"HTTP/1.1 431") and b"65536 bytes" in answer, answer[:200]


@pytest.mark.slow
def test_a_body_that_stops_arriving_closes_its_connection(service: Service) -> None:
    head = b"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    with socket.create_connection(("127.0.0.1", service.port)) as sock:
        sock.sendall(head + b"Content-Length: 100\r\n\r\n" + b'{"config": ')
        assert _answer(sock) == b""  # closed, nothing stored
    assert service.http.get("/v1/jobs").json()["total"] == 0


@pytest.mark.slow
def test_connections_past_the_most_are_refused_at_once(service: Service) -> None:
    socks = [socket.create_connection(("127.0.0.1", service.port)) for _ in range(9)]
    try:
        assert _answer(socks[-1]).startswith(b"HTTP/1.1 503")
    finally:
        for s in socks:
            s.close()
    # once the server has seen them go, it answers again
    wait_until(
        lambda: service.http.get("/v1/health").status_code == 200, timeout=30, what="health 200"
    )


@pytest.mark.slow
def test_a_forwarded_for_header_does_not_make_a_new_client(service: Service) -> None:
    job = service.submit(tiny_config())["id"]
    url = f"{service.url}/v1/jobs/{job}/events"
    with (
        httpx.Client(timeout=60) as a,
        httpx.Client(timeout=60) as b,
        a.stream("GET", url, headers={"X-Forwarded-For": "10.0.0.1"}) as first,
    ):
        assert first.status_code == 200
        second = b.get(url, headers={"X-Forwarded-For": "10.0.0.2"})
        assert second.status_code == 429, second.text
