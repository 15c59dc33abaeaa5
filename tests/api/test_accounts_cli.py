"""``reskd users / keys / login / logout / whoami / audit`` against a real service with a token,
in process, with the stored keys under the test's own HOME and XDG_CONFIG_HOME."""

from __future__ import annotations

import io
import json
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from api.cli.main import main
from api.client import Client, credentials
from tests.api.service import Service, tiny_config

TOKEN = "bootstrap-token"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A HOME and XDG_CONFIG_HOME of the test's own, and no RESKD_URL or RESKD_TOKEN."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("RESKD_URL", raising=False)
    monkeypatch.delenv("RESKD_TOKEN", raising=False)
    return tmp_path


def reskd(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``reskd ARGV`` in process: its exit status, stdout and stderr."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    svc = Service(tmp_path_factory.mktemp("svc"), workers=0, token=TOKEN)  # jobs stay queued
    yield svc
    svc.stop()


def new_key(capsys: pytest.CaptureFixture[str], service: Service, *argv: str) -> str:
    """``reskd keys create ARGV`` as the admin: the key, alone on stdout."""
    code, out, said = reskd(capsys, "keys", "create", *argv, *admin(service))
    assert code == 0 and "will not be shown again" in said, said
    return out.strip()


def admin(service: Service) -> tuple[str, ...]:
    return ("--url", service.url, "--token", TOKEN)


def keys_of(service: Service, user: str) -> list[dict[str, Any]]:
    """The user's keys, oldest first, as the admin lists them."""
    listed = Client(service.url, TOKEN).keys()  # an admin's: everyone's
    return [k for k in listed if k["user"] == user]


@pytest.mark.slow
def test_members_sign_in_once_and_act_as_themselves_and_viewers_only_read(
    home: Path, service: Service, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = reskd(capsys, "users", "add", "mia", *admin(service))
    assert code == 0 and "user mia added (member)" in out
    code, out, _ = reskd(capsys, "users", "add", "vic", "--role", "viewer",
                         "--max-running-jobs", "0", *admin(service))  # fmt: skip
    assert code == 0 and "user vic added (viewer)" in out
    code, key, said = reskd(capsys, "keys", "create", "--user", "mia", "--label", "laptop",
                            *admin(service))  # fmt: skip
    key = key.strip()  # alone on stdout
    assert code == 0 and key.startswith("rk_") and "\n" not in key
    assert "will not be shown again" in said and "of mia (laptop), expires" in said
    viewer = new_key(capsys, service, "--user", "vic", "--no-expiry")

    # login checks the key and keeps it (and the URL) for the owner only
    code, out, _ = reskd(capsys, "login", "--url", service.url, "--key", key)
    assert code == 0 and out.startswith(f"signed in as mia (member) at {service.url}\n")
    stored = home / "config" / "reskd" / "credentials.json"
    assert mode(stored) == 0o600 and mode(stored.parent) == 0o700
    assert json.loads(stored.read_text()) == {"url": service.url, "keys": {service.url: key}}
    assert not (home / "home" / ".config").exists()  # XDG_CONFIG_HOME, not ~/.config

    # later commands need no flag
    code, out, _ = reskd(capsys, "whoami")
    assert code == 0 and out.splitlines()[0] == f"mia (member) at {service.url}"
    assert f"from {stored}" in out.splitlines()[1]
    config = home / "tiny.json"
    config.write_text(json.dumps(tiny_config()))
    code, out, _ = reskd(capsys, "submit", str(config), "--priority", "5", "--name", "mine")
    job_id = int(out.split()[1])
    job = service.job(job_id)
    assert code == 0 and (job["owner"], job["priority"], job["name"]) == ("mia", 5, "mine")
    code, out, _ = reskd(capsys, "jobs", "--owner", "mia")
    assert code == 0 and f"{job_id} " in out and " mia " in out
    code, out, _ = reskd(capsys, "keys", "list")  # a member's: only their own
    assert code == 0 and "laptop" in out and "vic" not in out and "active" in out

    # a viewer reads, and may not cancel or list users: one line each, from the service
    code, out, err = reskd(capsys, "cancel", str(job_id), "--token", viewer)
    assert code == 2 and out == ""
    assert err == "reskd cancel: error: HTTP 403: vic is a viewer: a viewer may only read\n"
    assert service.job(job_id)["state"] == "queued"
    code, _, err = reskd(capsys, "users", "list", "--token", viewer)
    assert code == 2 and "only an admin may do this" in err
    code, out, _ = reskd(capsys, "users", "list", *admin(service))
    rows = {line.split()[0]: line.split() for line in out.splitlines()[2:]}
    assert rows["mia"][1:4] == ["member", "active", "default"]
    assert rows["vic"][1:4] == ["viewer", "active", "0"]

    # the audit log says who did what
    code, out, _ = reskd(capsys, "audit", *admin(service))
    assert all(f" {action} " in out for action in ("user.add", "key.create", "job.submit"))
    code, out, _ = reskd(capsys, "audit", "--actor", "mia", *admin(service))
    assert "job.submit" in out and "user.add" not in out
    assert out.endswith("1 of 1 entries, newest first\n")


@pytest.mark.slow
def test_a_revoked_key_and_a_disabled_users_keys_are_refused_at_once(
    home: Path, service: Service, capsys: pytest.CaptureFixture[str]
) -> None:
    assert reskd(capsys, "users", "add", "rex", *admin(service))[0] == 0
    first = new_key(capsys, service, "--user", "rex")
    assert reskd(capsys, "login", "--url", service.url, "--key", first)[0] == 0
    (key_id,) = (k["id"] for k in keys_of(service, "rex"))
    code, out, _ = reskd(capsys, "keys", "revoke", str(key_id), *admin(service))
    assert out == f"API key {key_id} of rex revoked: requests with it are refused\n"
    code, _, err = reskd(capsys, "jobs")
    assert code == 2 and err == f"reskd jobs: error: HTTP 403: API key {key_id} was revoked\n"
    code, out, _ = reskd(capsys, "logout", "--revoke")  # nothing left to revoke: signed out
    assert code == 0 and out.startswith(f"the service refuses this key already (API key {key_id}")
    assert not credentials.location().exists()

    fresh = new_key(capsys, service, "--user", "rex")
    assert reskd(capsys, "login", "--url", service.url, "--key", fresh)[0] == 0
    assert reskd(capsys, "users", "disable", "rex", *admin(service))[0] == 0
    code, _, err = reskd(capsys, "whoami")
    assert code == 2 and err == "reskd whoami: error: HTTP 403: user 'rex' is disabled\n"
    code, out, _ = reskd(capsys, "users", "list", *admin(service))
    assert next(ln for ln in out.splitlines() if ln.startswith("rex ")).split()[1:3] == [
        "member", "disabled"]  # fmt: skip
    assert reskd(capsys, "users", "enable", "rex", *admin(service))[0] == 0
    assert reskd(capsys, "whoami")[0] == 0
    code, out, _ = reskd(capsys, "audit", "--actor", "admin", *admin(service))
    assert " key.revoke " in out and " user.disable " in out

    code, out, _ = reskd(capsys, "logout", "--revoke")
    assert code == 0 and f"signed out of {service.url}" in out
    assert not credentials.location().exists()
    rexs = keys_of(service, "rex")
    assert out.startswith(f"API key {rexs[-1]['id']} revoked at {service.url}\n")
    assert all(k["revoked_at"] for k in rexs)  # the first by the admin, the second by logout


def test_the_stored_keys_are_one_per_url_and_the_last_url_is_the_default(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    credentials.save("http://a:1/", "rk_a")
    credentials.save("http://b:2", "rk_b")
    stored = credentials.load()
    assert stored.url == "http://b:2" and stored.key_for("http://a:1") == "rk_a"
    assert mode(credentials.location()) == 0o600
    assert credentials.forget("http://b:2") and credentials.load() == credentials.Stored(
        None, {"http://a:1": "rk_a"}
    )
    assert not credentials.forget("http://b:2")
    assert credentials.forget("http://a:1") and not credentials.location().exists()
    credentials.location().parent.mkdir(parents=True, exist_ok=True)
    credentials.location().write_text("[1]")
    with pytest.raises(ValueError, match="not a credentials file"):
        credentials.load()
    monkeypatch.delenv("XDG_CONFIG_HOME")
    assert credentials.location() == home / "home" / ".config" / "reskd" / "credentials.json"


def test_the_client_takes_the_token_then_the_environment_then_the_stored_key(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def sent(client: Client) -> str | None:
        return client.http.headers.get("Authorization")

    credentials.save("http://stored:1", "rk_stored")
    client = Client()
    assert client.url == "http://stored:1" and sent(client) == "Bearer rk_stored"
    assert client.credential == str(credentials.location())
    assert sent(Client(token="given")) == "Bearer given"
    assert sent(Client("http://other:2")) is None  # a key is only ever sent to its own URL
    monkeypatch.setenv("RESKD_URL", "http://env:3")
    monkeypatch.setenv("RESKD_TOKEN", "from-env")
    client = Client()
    assert client.url == "http://env:3" and sent(client) == "Bearer from-env"
    assert client.credential == "$RESKD_TOKEN"


@pytest.mark.parametrize(
    ("argv", "says"),
    [(["users", "list", "mia"], "name: `reskd users list` takes none"),
     (["users", "disable"], "name: `reskd users disable` needs the user's name"),
     (["users", "disable", "mia", "--role", "admin"], "--role: only with `reskd users add`"),
     (["users", "set", "mia"], "users set: give --role, --max-running-jobs or"),
     (["keys", "revoke"], "id: `reskd keys revoke` needs the key's id"),
     (["keys", "list", "--label", "x"], "--label: only with `reskd keys create`")],
)  # fmt: skip
def test_a_misplaced_argument_is_one_line_before_anything_is_sent(
    argv: list[str], says: str, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = reskd(capsys, *argv, "--url", "http://127.0.0.1:9")
    assert code == 2 and out == "" and err.startswith(f"reskd {argv[0]}: error: {says}")
    assert err.count("\n") == 1


def test_login_with_no_key_on_stdin_stores_nothing(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    code, _, err = reskd(capsys, "login", "--url", "http://127.0.0.1:9")
    assert code == 2 and "key: none given" in err and not credentials.location().exists()
