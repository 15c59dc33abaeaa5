"""GET /v1/pareto answered before the route (``api.http.kept``): only query strings the route has
validated, with the route's bytes and headers, never a stale front, and after the Host and token
checks. In process (the ASGI app on a temporary SQLite database), so it runs in make test-fast."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.http.kept import ParetoResponses
from api.http.main import create_app
from api.runtime.settings import Settings

ROW = {
    "dataset": "digits", "teacher": "resnet20", "stage": "S1", "arch": "a", "genotypes": None,
    "adaptive_mflops": 1.0, "params": 1, "energy": None, "seed": 0,
}  # fmt: skip


@pytest.fixture
def routed(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The query strings the route itself answered (it reports each one it validated)."""
    seen: list[bytes] = []
    validated = ParetoResponses.validated

    def spy(self: ParetoResponses, query_string: bytes, key: Any) -> None:
        seen.append(query_string)
        validated(self, query_string, key)

    monkeypatch.setattr(ParetoResponses, "validated", spy)
    return seen


def _client(tmp_path: Path, **settings: Any) -> Iterator[TestClient]:
    app = create_app(Settings(artifact_root=tmp_path, **settings))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        yield client
    app.state.db.dispose()


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    yield from _client(tmp_path)


def _store(client: TestClient, val_accuracy: float, mflops: float) -> None:
    """One architecture: D_v accuracy ``val_accuracy`` (what fronts rank on), test accuracy
    ordered the other way."""
    queue = client.app.state.queue  # type: ignore[attr-defined]
    job = queue.submit(kind="reskd", config={}, dataset="digits", name=None)
    row = ROW | {"val_accuracy": val_accuracy, "accuracy": 1 - val_accuracy, "mflops": mflops}
    queue.add_results(job_id=job, artifacts=[], architectures=[row])


HEADERS = ("etag", "cache-control", "content-type", "content-length")


def test_a_validated_query_is_answered_before_the_route_with_the_routes_bytes(
    client: TestClient, routed: list[bytes]
) -> None:
    _store(client, 0.9, 2.0)
    first = client.get("/v1/pareto?dataset=digits")
    assert first.status_code == 200 and routed == [b"dataset=digits"]
    again = client.get("/v1/pareto?dataset=digits")
    assert routed == [b"dataset=digits"]  # not routed again
    assert again.content == first.content
    assert [again.headers.get(h) for h in HEADERS] == [first.headers.get(h) for h in HEADERS]
    # the current ETag: a 304 as the route gives it, the same headers, no body
    same = client.get("/v1/pareto?dataset=digits", headers={"If-None-Match": first.headers["etag"]})
    assert same.status_code == 304 and same.content == b"" and routed == [b"dataset=digits"]
    assert same.headers["etag"] == first.headers["etag"]
    assert "content-type" not in same.headers

    # a stored result raises the fronts' revision: the next answer is the new front, not the kept
    _store(client, 0.95, 1.0)
    fresh = client.get(
        "/v1/pareto?dataset=digits", headers={"If-None-Match": first.headers["etag"]}
    )
    assert fresh.status_code == 200 and fresh.headers["etag"] != first.headers["etag"]
    assert [a["val_accuracy"] for a in fresh.json()["front"]] == [0.95]
    assert routed == [b"dataset=digits"]

    # another spelling of the same query is the route's to validate first, once
    other = client.get("/v1/pareto?cost=mflops&dataset=digits")
    assert other.content == fresh.content and routed[-1] == b"cost=mflops&dataset=digits"
    client.get("/v1/pareto?cost=mflops&dataset=digits")
    assert len(routed) == 2


def test_what_the_route_refuses_is_never_answered_before_it(
    client: TestClient, routed: list[bytes]
) -> None:
    _store(client, 0.9, 2.0)
    for _ in range(2):
        bad = client.get("/v1/pareto?cost=joules")
        assert bad.status_code == 422 and "cost" in bad.text
        unknown = client.get("/v1/pareto?dataset=mnist")
        assert unknown.status_code == 422 and "unknown dataset 'mnist'" in unknown.text
    assert routed == []
    assert client.get("/v1/pareto").status_code == 200 and routed == [b""]
    # an If-None-Match the route refuses (over its 1,000 characters) goes on to the route
    long = client.get("/v1/pareto", headers={"If-None-Match": "x" * 1001})
    assert long.status_code == 422 and "if-none-match" in long.text
    # other methods and paths are the app's: HEAD is not a route of the API, and the path with a
    # slash is redirected to the one without
    assert client.head("/v1/pareto").status_code == 405
    assert client.get("/v1/pareto/", follow_redirects=False).status_code == 307


def test_the_token_is_checked_before_a_kept_answer(tmp_path: Path, routed: list[bytes]) -> None:
    for client in _client(tmp_path, token="s3cret"):
        _store(client, 0.9, 2.0)
        ok = client.get("/v1/pareto", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and routed == [b""]
        assert client.get("/v1/pareto").status_code == 401
        wrong = client.get("/v1/pareto", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 403
        other_host = client.get(
            "/v1/pareto", headers={"Authorization": "Bearer s3cret", "Host": "evil.example"}
        )
        assert other_host.status_code == 421


def test_without_kept_responses_the_route_answers_every_query(
    tmp_path: Path, routed: list[bytes]
) -> None:
    for client in _client(tmp_path, pareto_cache_entries=0):
        _store(client, 0.9, 2.0)
        for _ in range(3):
            assert client.get("/v1/pareto").status_code == 200
        assert routed == [b"", b"", b""]
