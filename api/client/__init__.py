"""The HTTP client of the service (``reskd submit / jobs / show / cancel / pareto``, ``reskd
users / keys / login / whoami / audit``)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote

import httpx

from api.client import credentials
from api.client.config_files import load_json_or_yaml, with_sets

__all__ = ["DEFAULT_URL", "TERMINAL", "Client", "ServiceError", "load_json_or_yaml", "with_sets"]

DEFAULT_URL = "http://127.0.0.1:8321"
TERMINAL = ("succeeded", "failed", "cancelled")


class ServiceError(RuntimeError):
    def __init__(self, status: int, detail: Any) -> None:
        self.status, self.detail = status, detail
        text = _detail_text(detail)
        super().__init__(text if status == 0 else f"HTTP {status}: {text}")  # 0: no answer


def _detail_text(detail: Any) -> str:
    if isinstance(detail, list):
        return "; ".join(
            f"{'.'.join(str(p) for p in d.get('loc', [])[2:]) or 'body'}: {d.get('msg')}"
            for d in detail
        )
    return str(detail)


def _error_of(response: httpx.Response) -> ServiceError:
    """A failed answer (read) as the error to raise, with the service's ``detail``."""
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = response.text
    return ServiceError(response.status_code, detail)


# The fields of a zoo or genotype network's config (search/nets.py), none of them a teacher kind.
ZOO_FIELDS = ("model", "width", "num_classes", "genotype", "channels", "layers", "auxiliary",
              "drop_path_prob")  # fmt: skip


def _teacher_name(teacher: Any) -> str | None:
    """The architecture a config's ``teacher`` names, as the checkpoint upload reads it
    (``resnet20``, ``torchvision:resnet18``, ``timm:NAME``, ``torchscript``, ...); None for a
    genotype network."""
    if isinstance(teacher, str):
        return teacher
    if not isinstance(teacher, dict):
        return None
    if isinstance(teacher.get("program"), str):
        return str(teacher["program"])
    # a teacher kind that builds by name is the one key beside num_classes: {torchvision: resnet18}
    named = [k for k in teacher if k not in ZOO_FIELDS and isinstance(teacher[k], str)]
    if len(named) == 1 and "model" not in teacher:
        return f"{named[0]}:{teacher[named[0]]}"
    model, width = teacher.get("model"), teacher.get("width", 1)
    plain = isinstance(model, str) and model not in ("genotype", "searched") and width == 1
    return model if plain else None  # a zoo net at another width is checked at submit


class Client:
    """The service at ``url`` (else ``$RESKD_URL``, else the URL ``reskd login`` stored, else
    ``DEFAULT_URL``), asked with ``token`` (else ``$RESKD_TOKEN``, else the key ``reskd login``
    stored for that URL; ``credential`` says which)."""

    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 30):
        url = url or os.environ.get("RESKD_URL")
        given, source = token, "given"
        if not given and os.environ.get("RESKD_TOKEN"):
            given, source = os.environ["RESKD_TOKEN"], "$RESKD_TOKEN"
        if not (url and given):  # only then the stored keys are read
            stored = credentials.load()
            url = url or stored.url
            if not given and (found := stored.key_for(url or DEFAULT_URL)):
                given, source = found, str(credentials.location())
        self.url = (url or DEFAULT_URL).rstrip("/")
        self.credential = source if given else None
        headers = {"Authorization": f"Bearer {given}"} if given else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ServiceError(
                0,
                f"cannot reach the service at {self.url} ({exc}); is it running? Start one with "
                "`reskd serve`, or give its address with --url or RESKD_URL",
            ) from exc
        if response.status_code >= 400:
            raise _error_of(response)
        return response.json()

    def health(self) -> dict[str, Any]:
        return dict(self._call("GET", "/v1/health"))

    # -- who uses the service: /v1/me, /v1/users, /v1/keys, /v1/audit ---------------------------

    def me(self) -> dict[str, Any]:
        """Who the service takes this client for: ``name``, ``role``, quotas and ``key_id``."""
        return dict(self._call("GET", "/v1/me"))

    def users(self) -> list[dict[str, Any]]:
        """Every user (admins only)."""
        return list(self._call("GET", "/v1/users"))

    def add_user(
        self,
        name: str,
        *,
        role: str = "member",
        max_running_jobs: int | None = None,
        max_device_hours_per_day: float | None = None,
    ) -> dict[str, Any]:
        """A new user (admins only); a quota left None is the service's default."""
        body = {"name": name, "role": role, "max_running_jobs": max_running_jobs,
                "max_device_hours_per_day": max_device_hours_per_day}  # fmt: skip
        return dict(self._call("POST", "/v1/users", json=body))

    def update_user(self, name: str, **changes: Any) -> dict[str, Any]:
        """Set a user's ``role``, ``disabled``, ``max_running_jobs`` or
        ``max_device_hours_per_day`` (a quota None: the service's default); the fields not
        given stay (admins only)."""
        return dict(self._call("PATCH", f"/v1/users/{quote(name, safe='')}", json=changes))

    def keys(self) -> list[dict[str, Any]]:
        """This user's API keys (an admin's: everyone's), never the keys themselves."""
        return list(self._call("GET", "/v1/keys"))

    def create_key(
        self,
        *,
        user: str | None = None,
        label: str | None = None,
        expires_in_days: float | None = 90,
    ) -> dict[str, Any]:
        """A new key of ``user`` (default: this client's; another's: admins only) that expires
        after ``expires_in_days`` (None: never). Its ``key`` is shown this once."""
        body = {"user": user, "label": label, "expires_in_days": expires_in_days}
        return dict(self._call("POST", "/v1/keys", json=body))

    def revoke_key(self, key_id: int) -> dict[str, Any]:
        """Revoke a key (one's own, or as an admin any): requests with it are refused."""
        return dict(self._call("DELETE", f"/v1/keys/{key_id}"))

    def audit(
        self, *, actor: str | None = None, action: str | None = None, limit: int = 100
    ) -> dict[str, Any]:
        """The audit log's newest ``limit`` entries (admins only): ``entries`` and ``total``."""
        params = {"actor": actor, "action": action, "limit": limit}
        return dict(self._call("GET", "/v1/audit", params={k: v for k, v in params.items() if v}))

    def submit(
        self,
        config: dict[str, Any],
        *,
        kind: str = "reskd",
        name: str | None = None,
        priority: int = 0,
    ) -> dict[str, Any]:
        """Submit a job; a ``teacher_checkpoint`` or ``student_checkpoint`` that is a file here
        is uploaded first (the service reads no paths of the client's machine) and the job names
        the upload."""
        # search.config.CHECKPOINTS, spelled out: the client imports nothing of the service
        for field in ("teacher_checkpoint", "student_checkpoint"):
            checkpoint = config.get(field)
            if isinstance(checkpoint, str) and Path(checkpoint).is_file():
                checked = _teacher_name(config.get("teacher")) if field[0] == "t" else None
                uploaded = self.upload_checkpoint(
                    Path(checkpoint), teacher=checked, dataset=config.get("dataset")
                )
                config = {**config, field: uploaded}
        body = {"kind": kind, "config": config, "name": name, "priority": priority}
        return dict(self._call("POST", "/v1/jobs", json=body))

    def upload_checkpoint(
        self, path: Path, *, teacher: str | None = None, dataset: str | None = None
    ) -> str:
        """Upload a state dict (``torch.save``'s file, or ``.safetensors``) or a teacher program;
        the name a job's config gives it. With ``teacher`` (``torchvision:resnet18``,
        ``resnet20``, ``torchscript``, ...) and ``dataset`` the service checks that it fits."""
        params = {"name": path.name[-100:], "teacher": teacher, "dataset": dataset}
        with path.open("rb") as f:
            answer = self._call(
                "POST",
                "/v1/checkpoints",
                params={k: v for k, v in params.items() if v is not None},
                content=f,
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Length": str(path.stat().st_size),
                },
            )
        return str(answer["name"])

    def datasets(self) -> list[dict[str, Any]]:
        """The datasets the service can use, each with the ``dataset`` and ``root`` a job's
        config gives."""
        return list(self._call("GET", "/v1/datasets"))

    def jobs(self, **filters: Any) -> dict[str, Any]:
        params = {k: v for k, v in filters.items() if v is not None}
        return dict(self._call("GET", "/v1/jobs", params=params))

    def job(self, job_id: int) -> dict[str, Any]:
        return dict(self._call("GET", f"/v1/jobs/{job_id}"))

    def cancel(self, job_id: int) -> dict[str, Any]:
        return dict(self._call("POST", f"/v1/jobs/{job_id}/cancel"))

    def pareto(self, **params: Any) -> dict[str, Any]:
        return dict(
            self._call(
                "GET", "/v1/pareto", params={k: v for k, v in params.items() if v is not None}
            )
        )

    def architecture_groups(self) -> list[dict[str, Any]]:
        """The (dataset, teacher identity) groups of stored architectures, newest job first."""
        return list(self._call("GET", "/v1/architectures/groups")["groups"])

    def architectures(self, **filters: Any) -> list[dict[str, Any]]:
        """Stored architectures (``dataset``, ``teacher``, ``limit``, ... where given)."""
        params = {k: v for k, v in filters.items() if v is not None}
        return list(self._call("GET", "/v1/architectures", params=params)["architectures"])

    def create_sweep(self, spec: dict[str, Any]) -> dict[str, Any]:
        return dict(self._call("POST", "/v1/sweeps", json=spec))

    def sweeps(self, limit: int = 50) -> dict[str, Any]:
        return dict(self._call("GET", "/v1/sweeps", params={"limit": limit}))

    def sweep(self, sweep_id: int) -> dict[str, Any]:
        return dict(self._call("GET", f"/v1/sweeps/{sweep_id}"))

    def sweep_pareto(self, sweep_id: int) -> dict[str, Any]:
        return dict(self._call("GET", f"/v1/sweeps/{sweep_id}/pareto"))

    def cancel_sweep(self, sweep_id: int) -> dict[str, Any]:
        return dict(self._call("POST", f"/v1/sweeps/{sweep_id}/cancel"))

    # -- what the service keeps: deletes and usage ---------------------------------------------

    def delete_job(self, job_id: int) -> dict[str, Any]:
        """Delete an ended job with its files (a stage another job uses stays): what went."""
        return dict(self._call("DELETE", f"/v1/jobs/{job_id}"))

    def delete_sweep(self, sweep_id: int) -> dict[str, Any]:
        """Delete an ended sweep, its trials (as ``delete_job``) and its Optuna study."""
        return dict(self._call("DELETE", f"/v1/sweeps/{sweep_id}"))

    def delete_checkpoint(self, name: str) -> dict[str, Any]:
        """Delete an uploaded checkpoint that no queued or running job names."""
        return dict(self._call("DELETE", f"/v1/checkpoints/{quote(name, safe='')}"))

    def delete_dataset(self, name: str) -> dict[str, Any]:
        """Delete an uploaded dataset that no queued or running job names."""
        return dict(self._call("DELETE", f"/v1/datasets/{quote(name, safe='')}"))

    def usage(self) -> dict[str, Any]:
        """Per user: jobs, device hours and disk bytes; the shared line; the total measured."""
        return dict(self._call("GET", "/v1/usage"))

    def wait_sweep(
        self,
        sweep_id: int,
        *,
        progress: bool = True,
        poll: float = 2.0,
        out: TextIO | None = None,
    ) -> dict[str, Any]:
        """Poll until the sweep ends, with a bar over its trials on a terminal and a few plain
        lines a minute elsewhere (on ``out``, stderr)."""
        from api.client.progress import SweepView

        view = SweepView(sweep_id, file=out) if progress else None
        try:
            while True:
                sweep = self.sweep(sweep_id)
                if view is not None:
                    view.update(sweep)
                if sweep["state"] != "running":
                    return sweep
                time.sleep(poll)
        finally:
            if view is not None:
                view.close()

    def download(self, job_id: int, name: str, dest: Path) -> Path:
        """The job's artifact ``name`` as the file ``dest`` (its folders made as needed; written
        under a temporary name and renamed, so an interrupted download leaves no ``dest``)."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(f".{dest.name}.{os.getpid()}.part")
        try:
            with self.http.stream("GET", f"/v1/jobs/{job_id}/artifacts/{name}") as response:
                if response.status_code >= 400:
                    response.read()
                    raise _error_of(response)
                with partial.open("wb") as f:
                    for chunk in response.iter_bytes():
                        f.write(chunk)
            partial.replace(dest)
        except httpx.TransportError as exc:
            raise ServiceError(
                0, f"lost the service at {self.url} downloading {name} ({exc})"
            ) from exc
        finally:
            partial.unlink(missing_ok=True)
        return dest

    def events(self, job_id: int, *, retry: float = 1.0) -> Iterator[dict[str, Any]]:
        """The job each time it changes, from the service's event stream
        (``/v1/jobs/{id}/events``), until it has ended. A dropped stream (a restarted service)
        is reopened; while the service refuses a stream (429, 503: it holds its most) the job is
        polled instead. Raises ServiceError when the service stays unreachable for a minute."""
        unreachable_since: float | None = None
        while True:
            try:
                ended = yield from self._stream(job_id)
                unreachable_since = None
            except _Refused:
                job = self.job(job_id)
                yield job
                ended = job["state"] in TERMINAL
            except httpx.TransportError as exc:
                now = time.monotonic()
                unreachable_since = unreachable_since or now
                if now - unreachable_since > 60:
                    raise ServiceError(
                        0, f"lost the service at {self.url} for a minute ({exc})"
                    ) from exc
                ended = False
            if ended:
                return
            time.sleep(retry)

    def _stream(self, job_id: int) -> Generator[dict[str, Any], None, bool]:
        """One connection to the job's event stream: its jobs; True once it sent ``end``."""
        timeout = httpx.Timeout(10.0, read=120.0)  # the service sends a keep-alive every 15 s
        with self.http.stream("GET", f"/v1/jobs/{job_id}/events", timeout=timeout) as response:
            if response.status_code in (429, 503):
                raise _Refused
            if response.status_code >= 400:
                response.read()
                raise _error_of(response)
            event, data = "message", []
            for line in response.iter_lines():
                if line.startswith(":"):  # keep-alive
                    continue
                if line:
                    field, _, value = line.partition(":")
                    value = value[1:] if value.startswith(" ") else value
                    if field == "event":
                        event = value
                    elif field == "data":
                        data.append(value)
                    continue
                if event == "end":
                    return True
                if event == "job" and data:
                    job = json.loads("\n".join(data))
                    if "id" not in job:  # the service lost its database: reopen in a while
                        return False
                    yield job
                event, data = "message", []
        return False

    def wait(
        self, job_id: int, *, progress: bool = True, out: TextIO | None = None
    ) -> dict[str, Any]:
        """Follow the job over its event stream until it ends, showing its progress on ``out``
        (stderr): on a terminal a bar per phase of each stage, elsewhere a few plain lines a
        minute (``api.client.progress``)."""
        from api.client.progress import JobView

        view = JobView(job_id, file=out) if progress else None
        try:
            for job in self.events(job_id):
                if view is not None:
                    view.update(job)
            job = self.job(job_id)
            if view is not None:
                view.update(job)
            return job
        finally:
            if view is not None:
                view.close()


class _Refused(Exception):
    """The service holds its most event streams."""
