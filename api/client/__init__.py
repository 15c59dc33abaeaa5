"""The HTTP client of the service (``reskd submit / jobs / show / cancel / pareto``)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8321"


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


class Client:
    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 30):
        self.url = (url or os.environ.get("RESKD_URL") or DEFAULT_URL).rstrip("/")
        token = token or os.environ.get("RESKD_TOKEN")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
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
            try:
                detail = response.json().get("detail")
            except ValueError:
                detail = response.text
            raise ServiceError(response.status_code, detail)
        return response.json()

    def health(self) -> dict[str, Any]:
        return dict(self._call("GET", "/v1/health"))

    def submit(
        self, config: dict[str, Any], *, kind: str = "reskd", name: str | None = None
    ) -> dict[str, Any]:
        """Submit a job; a ``teacher_checkpoint`` that is a file here is uploaded first (the
        service reads no paths of the client's machine) and the job names the upload."""
        checkpoint = config.get("teacher_checkpoint")
        if isinstance(checkpoint, str) and Path(checkpoint).is_file():
            config = {**config, "teacher_checkpoint": self.upload_checkpoint(Path(checkpoint))}
        return dict(
            self._call("POST", "/v1/jobs", json={"kind": kind, "config": config, "name": name})
        )

    def upload_checkpoint(self, path: Path) -> str:
        """Upload a state dict (``torch.save``'s file); the name a job's config gives it."""
        with path.open("rb") as f:
            answer = self._call(
                "POST",
                "/v1/checkpoints",
                params={"name": path.name[-100:]},
                content=f,
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Length": str(path.stat().st_size),
                },
            )
        return str(answer["name"])

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

    def wait_sweep(
        self, sweep_id: int, *, progress: bool = True, poll: float = 2.0
    ) -> dict[str, Any]:
        """Poll until the sweep ends, with a progress bar over its trials."""
        from tqdm import tqdm

        sweep = self.sweep(sweep_id)
        bar = (
            tqdm(total=sweep["trials"], desc=f"sweep {sweep_id}", unit="trial")
            if progress
            else None
        )
        while True:
            states = sweep["trial_states"]
            ended = sum(states.get(k, 0) for k in ("succeeded", "failed", "cancelled"))
            if bar is not None:
                bar.n = ended
                best = max(
                    (t["accuracy"] for t in sweep["trial_list"] if t["accuracy"] is not None),
                    default=None,
                )
                bar.set_postfix(
                    running=states.get("running", 0),
                    failed=states.get("failed", 0),
                    best_acc="-" if best is None else f"{100 * best:.2f}%",
                )
                bar.refresh()
            if sweep["state"] != "running":
                if bar is not None:
                    bar.close()
                return sweep
            time.sleep(poll)
            sweep = self.sweep(sweep_id)

    def download(self, job_id: int, name: str, dest: Path) -> Path:
        with self.http.stream("GET", f"/v1/jobs/{job_id}/artifacts/{name}") as response:
            if response.status_code >= 400:
                response.read()
                raise ServiceError(response.status_code, response.text)
            with dest.open("wb") as f:
                for chunk in response.iter_bytes():
                    f.write(chunk)
        return dest

    def wait(self, job_id: int, *, progress: bool = True, poll: float = 1.0) -> dict[str, Any]:
        """Poll until the job ends, with a progress bar per stage (epochs) on a terminal."""
        from tqdm import tqdm

        bar = None
        shown = None
        while True:
            job = self.job(job_id)
            p = job["progress"]
            if progress and p.get("stage") and p.get("epochs"):
                if p["stage"] != shown:
                    if bar is not None:
                        bar.close()
                    bar = tqdm(total=p["epochs"], desc=f"job {job_id} {p['stage']}", unit="epoch")
                    shown = p["stage"]
                assert bar is not None
                bar.n = p.get("epoch") or 0
                bar.set_postfix(
                    loss=f"{p['loss']:.4f}" if p.get("loss") is not None else "-",
                    eta=f"{p['eta_seconds']:.0f}s" if p.get("eta_seconds") is not None else "-",
                )
                bar.refresh()
            if job["state"] in ("succeeded", "failed", "cancelled"):
                if bar is not None:
                    bar.close()
                return job
            time.sleep(poll)


def load_json_or_yaml(path: Path) -> dict[str, Any]:
    import yaml

    if not path.is_file():
        raise ValueError(f"config: no file at {path}")
    try:
        raw = yaml.safe_load(path.read_text())  # JSON is YAML
    except yaml.YAMLError as exc:  # one line: where and what, not PyYAML's traceback
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ValueError(f"config: {path} is not valid YAML or JSON{at}: {problem}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"config: {path} must hold a mapping of fields")
    return raw
