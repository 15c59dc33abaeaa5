"""Who may call what, generated from the service's own OpenAPI document: every route x every role
x owner and non-owner. A route's rule is its ``x-access`` (``api.http.access``); a route added
without one fails here (and the app refuses to start), and a route whose path parameters or body
this test cannot fill fails until it is taught them, so nothing goes unchecked."""

from __future__ import annotations

import io
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.http.access import RULES
from api.http.main import _every_route_has_a_rule, create_app
from api.runtime.accounts import add_user, create_key, find_user, revoke_key
from api.runtime.settings import Settings
from tests.api.service import tiny_config
from tests.api.test_datasets import folder, zipped

TOKEN = "bootstrap-s3cret"
OCTETS = {"Content-Type": "application/octet-stream"}
# who is allowed under each rule (the bootstrap token is the admin "admin")
ALLOWED = {
    "public": {"token", "ada", "mia", "otto", "vic"},
    "read": {"token", "ada", "mia", "otto", "vic"},
    "write": {"token", "ada", "mia", "otto"},
    "admin": {"token", "ada"},
    "owner": {"token", "ada", "mia"},  # mia owns every resource the requests name
}
CALLERS = ("vic", "otto", "mia", "ada", "token")  # the refused ones first: they change nothing


@dataclass
class Things:
    """Resources owned by mia, each already ended (so a delete or a stream may go through)."""

    job: int
    sweep: int
    checkpoint: str
    dataset: str
    key: int


class Team:
    def __init__(self, client: TestClient, app: FastAPI) -> None:
        self.client = client
        self.headers: dict[str, dict[str, str]] = {"token": {"Authorization": f"Bearer {TOKEN}"}}
        self.db = app.state.db
        self.counter = itertools.count()
        with self.db.session() as s:
            boot = _boot()
            for name, role in (("ada", "admin"), ("mia", "member"), ("otto", "member"),
                               ("vic", "viewer")):  # fmt: skip
                user = add_user(s, boot, name=name, role=role)
                _, key = create_key(s, boot, user)
                self.headers[name] = {"Authorization": f"Bearer {key}"}

    def call(self, who: str, method: str, url: str, **kwargs: Any) -> Any:
        headers = {**self.headers[who], **kwargs.pop("headers", {})}
        return self.client.request(method, url, headers=headers, **kwargs)

    def make(self) -> Things:
        n = next(self.counter)
        job = self.call("mia", "POST", "/v1/jobs", json={"config": tiny_config()})
        assert job.status_code == 201, job.text
        job_id = job.json()["id"]
        assert self.call("mia", "POST", f"/v1/jobs/{job_id}/cancel").status_code == 200
        sweep = self.call("mia", "POST", "/v1/sweeps", json={"base": tiny_config(), "trials": 1})
        assert sweep.status_code == 201, sweep.text
        sweep_id = sweep.json()["id"]
        assert self.call("mia", "POST", f"/v1/sweeps/{sweep_id}/cancel").status_code == 200
        buffer = io.BytesIO()
        torch.save({"w": torch.full((4,), float(n))}, buffer)
        checkpoint = self.call(
            "mia",
            "POST",
            "/v1/checkpoints",
            params={"name": f"c{n}.pt"},
            content=buffer.getvalue(),
            headers=OCTETS,
        )
        assert checkpoint.status_code == 201, checkpoint.text
        dataset = self.call(
            "mia",
            "POST",
            "/v1/datasets",
            params={"name": f"d{n}"},
            content=zipped(folder(train=2, val=1)),
            headers=OCTETS,
        )
        assert dataset.status_code == 201, dataset.text
        key = self.call("mia", "POST", "/v1/keys", json={"label": f"spare {n}"})
        assert key.status_code == 201, key.text
        return Things(job_id, sweep_id, checkpoint.json()["name"], f"d{n}", key.json()["id"])

    def snapshot(self, things: Things) -> list[Any]:
        """What an admin reads of mia's things: a refused request must leave it as it was."""
        urls = (f"/v1/jobs/{things.job}", f"/v1/sweeps/{things.sweep}", "/v1/checkpoints",
                "/v1/datasets", "/v1/keys", "/v1/users")  # fmt: skip
        return [self.call("token", "GET", url).json() for url in urls]


def _boot() -> Any:
    from api.runtime.accounts import Principal

    return Principal("admin", "admin")


def _url(path: str, things: Things) -> str:
    """The path with its parameters filled with mia's things; a parameter this test does not
    know fails it (teach it here)."""
    values = {
        "{job_id}": str(things.job),
        "{sweep_id}": str(things.sweep),
        "{key_id}": str(things.key),
        "{name}": things.checkpoint
        if path.startswith("/v1/checkpoints")
        else things.dataset
        if path.startswith("/v1/datasets")
        else "vic"
        if path.startswith("/v1/users")
        else "config.yaml",  # an artifact
    }
    for param, value in values.items():
        path = path.replace(param, value)
    assert "{" not in path, f"{path}: a path parameter the authorization test cannot fill"
    return path


def _body(method: str, path: str, team: Team) -> dict[str, Any]:
    """The request's body: what each route that takes one needs to pass validation."""
    n = next(team.counter)
    bodies: dict[tuple[str, str], Callable[[], dict[str, Any]]] = {
        ("POST", "/v1/jobs"): lambda: {"json": {"config": tiny_config()}},
        ("POST", "/v1/sweeps"): lambda: {"json": {"base": tiny_config(), "trials": 1}},
        ("POST", "/v1/users"): lambda: {"json": {"name": f"new{n}", "role": "viewer"}},
        ("PATCH", "/v1/users/{name}"): lambda: {"json": {"max_running_jobs": 5}},
        ("POST", "/v1/keys"): lambda: {"json": {"label": "matrix"}},
        ("POST", "/v1/checkpoints"): lambda: _checkpoint(n),
        ("POST", "/v1/datasets"): lambda: {
            "params": {"name": f"up{n}"},
            "content": zipped(folder(train=2, val=1)),
            "headers": OCTETS,
        },
        ("POST", "/v1/gc"): lambda: {"json": {"dry_run": True}},
    }
    return bodies[(method, path)]() if (method, path) in bodies else {}


def _checkpoint(n: int) -> dict[str, Any]:
    buffer = io.BytesIO()
    torch.save({"w": torch.full((3,), float(n))}, buffer)
    return {"params": {"name": f"u{n}.pt"}, "content": buffer.getvalue(), "headers": OCTETS}


@pytest.fixture
def team(tmp_path: Path) -> Iterator[Team]:
    app = create_app(Settings(artifact_root=tmp_path, token=TOKEN))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        yield Team(client, app)


def _operations(app_schema: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    ops = []
    for path, item in app_schema["paths"].items():
        for method, op in item.items():
            ops.append((method.upper(), path, op.get("x-access"), "requestBody" in op))
    return ops


@pytest.mark.slow  # a few hundred requests, fresh resources for each allowed change
def test_every_route_of_every_role_and_owner_is_allowed_or_refused_by_its_rule(
    team: Team,
) -> None:
    schema = team.client.get("/openapi.json").json()
    ops = _operations(schema)
    assert len(ops) >= 30
    refused, allowed = 0, 0
    for method, path, rule, has_body in ops:
        assert rule in RULES, f"{method} {path}: no access rule"
        if has_body:  # a route that takes a body this test cannot fill fails it
            assert (method, path) in _BODIED, f"{method} {path}: a body this test cannot fill"
        things = team.make()
        before = team.snapshot(things)
        for who in CALLERS:
            if who in ALLOWED[rule] and rule == "owner":
                things = team.make()  # a fresh one: the first allowed delete removes it
            r = team.call(who, method, _url(path, things), **_body(method, path, team))
            where = f"{who} {method} {path} ({rule}): {r.status_code} {r.text[:300]}"
            if who in ALLOWED[rule]:
                assert r.status_code not in (401, 403) and r.status_code < 500, where
                allowed += 1
            else:
                assert r.status_code == 403, where
                assert team.snapshot(things) == before, f"{where}: it changed something"
                refused += 1
        # and nobody without a credential gets past a rule but public
        r = team.client.request(method, _url(path, things), **_body(method, path, team))
        assert r.status_code == (200 if rule == "public" else 401), f"anonymous {method} {path}"
    assert {rule for _, _, rule, _ in ops} == set(RULES) and refused and allowed


_BODIED = {
    ("POST", "/v1/jobs"),
    ("POST", "/v1/sweeps"),
    ("POST", "/v1/users"),
    ("PATCH", "/v1/users/{name}"),
    ("POST", "/v1/keys"),
    ("POST", "/v1/checkpoints"),
    ("POST", "/v1/datasets"),
    ("POST", "/v1/gc"),
}


def test_a_route_without_a_rule_stops_the_app_from_starting() -> None:
    app = FastAPI()

    @app.get("/v1/forgotten")
    def forgotten() -> dict[str, str]:
        return {}

    with pytest.raises(RuntimeError, match="/v1/forgotten declares no access rule"):
        _every_route_has_a_rule(app)


def test_a_revoked_or_expired_key_or_a_disabled_user_is_refused(team: Team) -> None:
    assert team.call("mia", "GET", "/v1/me").json()["name"] == "mia"
    with team.db.session() as s:
        boot = _boot()
        otto = find_user(s, "otto")
        assert otto is not None
        row, expired = create_key(s, boot, otto, expires_in_days=1e-9)
    r = team.client.get("/v1/jobs", headers={"Authorization": f"Bearer {expired}"})
    assert r.status_code == 403 and f"API key {row.id} expired" in r.json()["detail"]
    keys = team.call("mia", "GET", "/v1/keys").json()
    assert [k["user"] for k in keys] == ["mia"]  # a member sees only its own keys
    r = team.call("mia", "DELETE", f"/v1/keys/{keys[0]['id']}")
    assert r.status_code == 200 and r.json()["revoked_at"] is not None
    r = team.call("mia", "GET", "/v1/jobs")
    assert r.status_code == 403 and "was revoked" in r.json()["detail"]
    r = team.call("ada", "PATCH", "/v1/users/otto", json={"disabled": True})
    assert r.status_code == 200 and r.json()["disabled"] is True
    r = team.call("otto", "GET", "/v1/jobs")
    assert r.status_code == 403 and "'otto' is disabled" in r.json()["detail"]
    r = team.client.get("/v1/jobs", headers={"Authorization": "Bearer rk_nothing"})
    assert r.status_code == 403
    actions = [e["action"] for e in team.call("token", "GET", "/v1/audit").json()["entries"]]
    assert {"key.revoke", "user.disable", "key.create", "user.add"} <= set(actions)


def test_keys_are_stored_as_digests_and_shown_once(team: Team) -> None:
    r = team.call("ada", "POST", "/v1/keys", json={"user": "vic", "label": "laptop"})
    assert r.status_code == 201
    key = r.json()["key"]
    assert key.startswith("rk_") and "key" not in team.call("ada", "GET", "/v1/keys").json()[0]
    with team.db.session() as s:
        from db.models import ApiKey

        stored = s.get(ApiKey, r.json()["id"])
        assert stored is not None and key not in (stored.digest, stored.lookup)
        assert stored.digest != key and len(stored.digest) == 64
        revoke_key(s, _boot(), stored)
    r = team.call("otto", "POST", "/v1/keys", json={"user": "vic"})
    assert r.status_code == 403 and "only an admin" in r.json()["detail"]


def test_a_token_less_service_is_its_local_admin_and_a_key_names_its_user(tmp_path: Path) -> None:
    app = create_app(Settings(artifact_root=tmp_path))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        assert client.get("/v1/me").json() == {
            "name": "local", "role": "admin", "disabled": False, "max_running_jobs": None,
            "max_device_hours_per_day": None, "created_at": None, "key_id": None,
        }  # fmt: skip
        with app.state.db.session() as s:
            user = add_user(s, _boot(), name="mia", role="member")
            _, key = create_key(s, _boot(), user)
        mine = {"Authorization": f"Bearer {key}"}
        r = client.post("/v1/jobs", json={"config": tiny_config()}, headers=mine)
        assert r.status_code == 201 and r.json()["owner"] == "mia"
        assert client.post("/v1/jobs", json={"config": tiny_config()}).json()["owner"] == "local"
