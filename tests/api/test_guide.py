"""The guide "Your own teacher and data" (docs/own-teacher-and-data.md), run as written: its bash
blocks in order, in one shell, against the service it starts, with its own.yaml."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.api.service import free_port

pytestmark = pytest.mark.slow

GUIDE = Path(__file__).parents[2] / "docs" / "own-teacher-and-data.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", GUIDE.read_text(), flags=re.S)


def test_the_guides_commands_run_as_written(mine: Any, tmp_path: Path) -> None:
    config = next(b for b in blocks("yaml") if b.startswith("# own.yaml"))
    (tmp_path / "own.yaml").write_text(config)
    shown = yaml.safe_load(config)
    assert (shown["mean"], shown["std"]) == (mine.mean, mine.std)  # the guide's figures are true
    port = free_port()
    script = "\n".join(b.replace("8321", str(port)) for b in blocks("bash"))
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ) | {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "RESKD_PORT": str(port),
        "RESKD_URL": f"http://127.0.0.1:{port}",
        "RESKD_ARTIFACT_ROOT": str(tmp_path / "service"),
        "OMP_NUM_THREADS": "1",
        "DATA": str(mine.data),
        "TEACHER": str(mine.tv_file),
        "IMAGE": str(next(mine.data.glob("test/seven/*.png"))),
    }
    run = f"set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\n{script}\n"
    done = subprocess.run(
        ["bash", "-c", run], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    out = done.stdout
    assert '"name":"mydigits"' in out.replace(" ", "")  # the upload, then the listing
    assert "uploaded as teacher-" in out
    assert "succeeded" in out
    lines = [line for line in out.splitlines() if "seven" in line and "res-students" in line]
    assert len(lines) == 2, out  # reskd predict and predict.py, each naming the class
