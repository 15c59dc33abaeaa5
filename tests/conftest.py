"""Shared fixtures: the database backends the store tests run against; the tests' own network
namespace (``tests/network.py``)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import network, postgres


def pytest_configure(config: pytest.Config) -> None:
    # Before any server starts: servers of the tests are reachable on 127.0.0.1 only.
    network.isolate()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # Two test workers share the cores: each one's servers and trainings take one thread, as
        # OpenMP threads that outnumber the cores spin against each other (a job ran 20x slower).
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        os.environ.setdefault("RESKD_WORKER_THREADS", "1")  # the services' training workers


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``pytest -n 2 --dist loadgroup`` sends the cases of one ``xdist_group`` to one worker by a
    suffix of their node id (``...@group``). pytest-xdist 3.8 writes it to ``item._nodeid``, which
    pytest 9 no longer reads (its node ids live in ``item._id``): every group would be ignored,
    and two Ray clusters or two copies of a module's service would run at once. The suffix is
    set here where pytest reads it, as xdist sets it, in the test workers only."""
    if not getattr(config.option, "loadgroup", False):
        return
    for item in items:
        marks = item.iter_markers("xdist_group")
        groups = sorted(
            {str(m.args[0] if m.args else m.kwargs.get("name", "default")) for m in marks}
        )
        if groups and "@" not in item.nodeid:
            item._id = type(item._id).parse(f"{item.nodeid}@{'_'.join(groups)}")


def pytest_report_header(config: pytest.Config) -> str:
    return "network: " + (
        "isolated (only 127.0.0.1)" if network.isolated() else f"shared; {network.REASON}"
    )


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """The URL of a real PostgreSQL server on 127.0.0.1 (``.ci/run``'s, or one started here)."""
    url = os.environ.get(postgres.ENV)
    if url:
        yield url
        return
    try:
        # Not under pytest's folder: the server runs as the postgres user, which cannot enter it.
        server = postgres.Server(Path(tempfile.mkdtemp(prefix="reskd-postgres-")))
    except (RuntimeError, OSError) as exc:
        pytest.skip(f"no PostgreSQL server: {exc}; .ci/run installs and starts one")
    yield server.url
    server.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each backend (PostgreSQL's server takes seconds to start: slow)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'reskd.db'}"
    server: str = request.getfixturevalue("postgres_server")
    return postgres.fresh_database(server)


@pytest.fixture(scope="session")
def mine(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A user's own ImageFolder and teachers trained on it (``tests.own.digits_folder.Own``)."""
    from tests.own.digits_folder import Own

    return Own(tmp_path_factory.mktemp("own"))
