"""The README and the documentation site: what a reader sees is documentation (no diary), the
generated reference lists every config field, each result names the command that reproduces it,
and the site builds with --strict."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).parents[1]
DOCS = ROOT / "docs"
RESULTS = sorted((DOCS / "results").glob("*.md"))
DIARY = [
    (re.compile(r"\bissues?\s*#?\d+", re.I), "an issue number"),
    (
        re.compile(
            r"(?<![0-9A-Za-z_./-])(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,40}(?![0-9A-Za-z_])"
        ),
        "a commit hash",
    ),
    (re.compile(r"this machine", re.I), '"this machine"'),
]


def hooks() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_hooks", DOCS / "hooks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def diary(text: str) -> list[str]:
    return [f"{what}: {m.group(0)!r}" for pattern, what in DIARY for m in pattern.finditer(text)]


def test_the_readme_is_short_and_has_no_diary() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 260
    assert diary(readme) == []


@pytest.mark.parametrize("page", sorted(DOCS.rglob("*.md")), ids=lambda p: str(p.relative_to(DOCS)))
def test_no_page_has_a_diary(page: Path) -> None:
    assert diary(page.read_text()) == []


def test_the_diary_scan_catches_what_it_should() -> None:
    assert len(diary("see issue 17, fixed in 1a78f08 on this machine")) == 3
    assert diary("D_v 99.67%, 0.242 MFLOPs, resnet20, --seeds 0 1 2, 2048x2048") == []


def sections(markdown: str) -> dict[str, str]:
    """Each model's section of the generated page: heading name -> its table."""
    parts = re.split(r"^#+ (\w+) \{ #\w+ \}$", markdown, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_the_config_reference_lists_every_field_of_the_schema() -> None:
    from search.config import RunConfig

    schema = RunConfig.model_json_schema()
    page = sections(hooks().render_config())
    models = {"RunConfig": schema, **schema["$defs"]}
    assert set(models) <= set(page)
    missing = [
        f"{model}.{field}"
        for model, body in models.items()
        for field in body.get("properties", {})
        if f"| `{field}` |" not in page[model]
    ]
    assert missing == []


def test_the_reference_renders_a_model_it_has_never_seen() -> None:
    schema = {
        "title": "Outer",
        "properties": {"inner": {"$ref": "#/$defs/Inner"}, "n": {"type": "integer", "minimum": 1}},
        "required": ["n"],
        "$defs": {"Inner": {"properties": {"flag": {"type": "boolean", "default": False}}}},
    }
    page = hooks().render_config(schema)
    assert "| `inner` | [Inner](#inner) |" in page
    assert "| `n` | integer | **required** | ≥ 1 |" in page
    assert "| `flag` | boolean | `false` |" in page


def test_the_cli_reference_has_every_subcommand_and_option() -> None:
    from api.cli.main import build_parser

    page = hooks().render_cli()
    for name, _, sub in hooks().subcommands(build_parser()):
        assert f"## reskd {name} " in page
        for action in sub._actions:
            for option in action.option_strings:
                if option not in ("-h", "--help"):
                    assert f"`{option}`" in page, (name, option)


@pytest.mark.parametrize("page", RESULTS, ids=lambda p: p.name)
def test_each_result_names_the_command_that_reproduces_it(page: Path) -> None:
    commands = [
        line
        for line in page.read_text().splitlines()
        if "python -m benchmarks." in line or re.search(r"\breskd [a-z]", line)
    ]
    assert commands, f"{page.name} names no reproducing command"


def test_every_results_page_is_in_the_site() -> None:
    site = (ROOT / "mkdocs.yml").read_text()
    assert [p.name for p in RESULTS if f"results/{p.name}" not in site] == []


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("mkdocs", path=str(Path(sys.executable).parent)) is None,
    reason="mkdocs is not installed (pip install -e '.[docs]')",
)
def test_the_site_builds_strictly(tmp_path: Path) -> None:
    mkdocs = Path(sys.executable).parent / "mkdocs"
    done = subprocess.run(
        [str(mkdocs), "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={
            "NO_MKDOCS_2_WARNING": "1",
            "PATH": str(Path(sys.executable).parent),
            "HOME": str(tmp_path),
        },
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert (tmp_path / "site" / "reference" / "config" / "index.html").is_file()
