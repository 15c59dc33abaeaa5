"""A package installed beside the service adds a search strategy and a KD method through the
entry-point groups the built-ins use (``tests/plugins/reskd-toy``, installed by ``make install``),
and a real job runs with both; an unknown name is a 422 that lists the registered ones."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.service import Service, tiny_config

PLUGIN = Path(__file__).parents[1] / "plugins" / "reskd-toy"

pytestmark = pytest.mark.slow  # installs a package and starts a server


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The plug-in installed as pip installs any package (its dist-info with the entry points),
    into a directory the service's Python finds on ``PYTHONPATH``; the test's own environment
    is left as it was."""
    tmp = tmp_path_factory.mktemp("plugin")
    shutil.copytree(PLUGIN, tmp / "source")
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation"]
    subprocess.run([*pip, "--target", str(tmp / "site"), str(tmp / "source")], check=True)
    return tmp / "site"


def registered(site: Path, group: str) -> list[str]:
    """The names of a registry as a Python with the plug-in on its path lists them."""
    code = (
        "import json, sys; from search.spec import STRATEGIES; from distill.methods import METHODS;"
        f"print(json.dumps({{'strategies': STRATEGIES.names(), 'methods': METHODS.names()}}"
        f"[{group!r}]))"
    )
    env = dict(os.environ) | {"PYTHONPATH": str(site)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True
    )
    return list(json.loads(out.stdout))


def test_the_plugin_registers_through_the_same_groups_as_the_builtins(site: Path) -> None:
    assert {"stacnas", "darts", "nni-darts", "toy-random"} <= set(registered(site, "strategies"))
    assert {"kd", "dml", "relational", "toy-cosine"} <= set(registered(site, "methods"))
    # without it, the same registries hold the built-ins only: nothing is hard-wired beside them
    from distill.methods import METHODS
    from search.spec import STRATEGIES

    assert "toy-random" not in STRATEGIES and "toy-cosine" not in METHODS
    assert {"stacnas", "darts", "nni-darts"} <= set(STRATEGIES.names())


@pytest.fixture(scope="module")
def service(site: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    svc = Service(tmp_path_factory.mktemp("plugins"), extra_env={"PYTHONPATH": str(site)})
    try:
        yield svc
    finally:
        svc.stop()


def test_a_job_runs_with_the_plugin_strategy_and_method(service: Service) -> None:
    config = tiny_config(
        res_students=[
            {
                "model": "searched",
                "search": {
                    "strategy": "toy-random",
                    "budget_mflops": 0.1,
                    "layers": 3,
                    "draw_seed": 7,
                },
            }
        ],
        kd={"method": "toy-cosine", "scale": 2.0},
    )
    job = service.done(service.submit(config)["id"])
    assert job["state"] == "succeeded", job["error"]
    assert [s["kind"] for s in job["stages"]] == [
        "teacher",
        "gate",
        "student",
        "search",
        "finetune",
    ]
    assert "toy-random" in job["stages"][3]["name"]
    assert [m["model"] for m in job["metrics"]][:3] == ["T", "S0", "S1"]
    rows = {m["model"]: m for m in job["metrics"]}
    assert 0 < rows["S1"]["mflops"] - rows["S0"]["mflops"] <= 0.1  # R1 within its budget
    # the stored config keeps the plug-ins' own settings; the search record names the strategy
    assert job["config"]["kd"]["method"] == "toy-cosine" and job["config"]["kd"]["scale"] == 2.0
    assert job["config"]["res_students"][0]["search"]["draw_seed"] == 7
    (found,) = job["searches"]
    assert found["strategy"] == "toy-random" and found["mflops"] <= 0.1
    log = service.http.get(f"/v1/jobs/{job['id']}/artifacts/log.txt").text
    assert "toy-random: drew weights for 14 edges per cell (seed 7)" in log

    # the plug-in's models join the schema: /openapi.json and /docs describe their fields
    schemas = json.dumps(service.http.get("/openapi.json").json())
    assert '"draw_seed"' in schemas and '"scale"' in schemas


def test_unknown_names_are_422_listing_the_registered_ones(service: Service) -> None:
    stored = service.http.get("/v1/jobs").json()["total"]
    bad_strategy = tiny_config(
        res_students=[{"model": "searched", "search": {"strategy": "nope", "budget_mflops": 0.2}}]
    )
    r = service.http.post("/v1/jobs", json={"kind": "reskd", "config": bad_strategy})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"][0]
    assert detail["loc"][-1] == "strategy"
    for name in ("stacnas", "darts", "nni-darts", "toy-random"):
        assert name in detail["msg"]

    r = service.http.post(
        "/v1/jobs", json={"kind": "reskd", "config": tiny_config(kd={"method": "nope"})}
    )
    assert r.status_code == 422, r.text
    detail = r.json()["detail"][0]
    assert detail["loc"][-1] == "method"
    for name in ("kd", "dml", "relational", "toy-cosine"):
        assert name in detail["msg"]
    assert service.http.get("/v1/jobs").json()["total"] == stored  # nothing stored for them
