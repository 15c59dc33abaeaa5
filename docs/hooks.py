"""MkDocs hook: the reference pages, generated from the code at build time.

A page holds a marker; ``on_page_markdown`` replaces it with markdown rendered from the code:

- ``<!-- reference:config -->``: every field of the run config, from ``RunConfig``'s JSON schema
  (its ``$defs`` included), one table per model;
- ``<!-- reference:sweep -->``: the sweep config (``SweepSpec``), its run-config models linked;
- ``<!-- reference:cli -->``: every ``reskd`` command, walked from ``api.cli.main.build_parser()``;
- ``<!-- reference:http -->``: every route of the HTTP API, from the OpenAPI document of an app
  built in a temporary directory (SQLite, no network, nothing served).

Nothing here is written twice: a field, an option or a route documented in the code appears in
the site as the code says it. ``tests/test_docs.py`` calls the render functions directly.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

Schema = dict[str, Any]
Link = Callable[[str], str]

CONFIG_PAGE = "config.md"  # the run config's page, beside the CLI and HTTP pages


# --- JSON schema as tables ----------------------------------------------------------------


def anchor(name: str) -> str:
    return name.lower()


def _cell(text: str) -> str:
    """Text that stays inside one table cell."""
    return " ".join(text.split()).replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def _code(value: Any) -> str:
    return f"`{json.dumps(value)}`".replace("|", "\\|")


def _prose(text: str) -> str:
    """A description as one markdown paragraph (reST's double backticks made single)."""
    return " ".join(text.replace("``", "`").split())


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def type_text(schema: Schema, link: Link) -> str:
    """A field's type as a reader says it: ``integer``, ``list of [ZooNet](#zoonet)``, ..."""
    if "$ref" in schema:
        return link(_ref_name(schema["$ref"]))
    if "const" in schema:
        return _code(schema["const"])
    if "enum" in schema:
        return " or ".join(_code(v) for v in schema["enum"])
    for key in ("oneOf", "anyOf", "allOf"):
        if key in schema:
            return " or ".join(type_text(s, link) for s in schema[key])
    kind = schema.get("type")
    if kind == "array":
        return f"list of {type_text(schema.get('items', {}), link)}"
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        return f"map of {type_text(schema['additionalProperties'], link)}"
    if isinstance(kind, list):
        return " or ".join(kind)
    return kind or "any"


_LIMITS = {
    "minimum": "≥ {}",
    "maximum": "≤ {}",
    "exclusiveMinimum": "> {}",
    "exclusiveMaximum": "< {}",
    "minLength": "at least {} characters",
    "maxLength": "at most {} characters",
    "minItems": "at least {} items",
    "maxItems": "at most {} items",
    "pattern": "matches `{}`",
}


def limits_text(schema: Schema) -> str:
    """The field's bounds, its union members' included."""
    found = [text.format(schema[key]) for key, text in _LIMITS.items() if key in schema]
    for key in ("anyOf", "oneOf"):
        for member in schema.get(key, []):
            found += [text.format(member[k]) for k, text in _LIMITS.items() if k in member]
    if "discriminator" in schema:
        found.append(f"chosen by `{schema['discriminator']['propertyName']}`")
    return ", ".join(found)


def fields_table(model: Schema, link: Link) -> str:
    """One row per property: name, type, default (or required), limits, description."""
    required = set(model.get("required", []))
    rows = ["| field | type | default | limits | description |", "|---|---|---|---|---|"]
    for name, field in model.get("properties", {}).items():
        if "default" in field:
            default = _code(field["default"])
        else:
            default = "**required**" if name in required else ""
        rows.append(
            f"| `{name}` | {type_text(field, link)} | {default} | "
            f"{_cell(limits_text(field))} | {_cell(field.get('description', ''))} |"
        )
    return "\n".join(rows)


def model_section(name: str, model: Schema, link: Link, level: int = 2) -> str:
    """A heading with its anchor, the model's own description, then its table (or its type)."""
    hashes = "#" * level
    parts = [f"{hashes} {name} {{ #{anchor(name)} }}"]
    if model.get("description"):
        parts.append(_prose(model["description"]))
    if "properties" in model:
        extra = model.get("additionalProperties")
        parts.append(fields_table(model, link))
        if extra is False:
            parts.append("Other keys are refused (a 422 naming the key).")
    else:
        parts.append(f"Type: {type_text(model, link)}.")
    return "\n\n".join(parts)


def local_link(name: str) -> str:
    return f"[{name}](#{anchor(name)})"


def run_config_schema() -> Schema:
    from search.config import RunConfig

    return RunConfig.model_json_schema()


def render_config(schema: Schema | None = None) -> str:
    """Every model of the run config: ``RunConfig`` first, then its ``$defs`` by name."""
    schema = schema or run_config_schema()
    defs = schema.get("$defs", {})
    sections = [model_section("RunConfig", schema, local_link)]
    sections += [model_section(name, defs[name], local_link) for name in sorted(defs)]
    return "\n\n".join(sections)


def render_sweep() -> str:
    """The sweep config; the run-config models it holds link to their tables."""
    from search.sweep import SweepSpec

    known = set(run_config_schema().get("$defs", {})) | {"RunConfig"}
    schema = SweepSpec.model_json_schema()

    def link(name: str) -> str:
        return f"[{name}]({CONFIG_PAGE}#{anchor(name)})" if name in known else local_link(name)

    defs = {k: v for k, v in schema.get("$defs", {}).items() if k not in known}
    sections = [model_section("SweepSpec", schema, link)]
    sections += [model_section(name, defs[name], link) for name in sorted(defs)]
    return "\n\n".join(sections)


# --- the command line ---------------------------------------------------------------------


@contextmanager
def _columns(width: int) -> Iterator[None]:
    """argparse wraps its usage at the terminal's width: the same page on every machine."""
    before = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(width)
    try:
        yield
    finally:
        if before is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = before


def subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """(name, help, parser) of each subcommand, in the order ``--help`` lists them."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            found += [(name, helps.get(name, ""), sub) for name, sub in action.choices.items()]
    return found


def _argument_row(action: argparse.Action) -> str:
    name = (
        ", ".join(f"`{o}`" for o in action.option_strings) or f"`{action.metavar or action.dest}`"
    )
    if action.nargs == 0:
        value = "(flag)"
    elif action.choices is not None and not isinstance(action, argparse._SubParsersAction):
        value = " or ".join(f"`{c}`" for c in action.choices)
    else:
        value = f"`{action.metavar or action.dest.upper()}`" if action.option_strings else ""
        if action.nargs in ("+", "*"):
            value = f"{value or name} ..."
    if action.option_strings and action.default not in (None, False, argparse.SUPPRESS):
        default = _code(
            action.default if not isinstance(action.default, Path) else str(action.default)
        )
    else:
        default = ""
    return f"| {name} | {value} | {default} | {_cell(action.help or '')} |"


def arguments_table(parser: argparse.ArgumentParser) -> str:
    rows = ["| argument | value | default | what it does |", "|---|---|---|---|"]
    rows += [
        _argument_row(a)
        for a in parser._actions
        if not isinstance(a, argparse._HelpAction | argparse._SubParsersAction)
        and a.help != argparse.SUPPRESS
    ]
    return "\n".join(rows)


def render_cli(parser: argparse.ArgumentParser | None = None) -> str:
    """``reskd``'s usage, then one section per subcommand: usage, help, arguments."""
    if parser is None:
        from api.cli.main import build_parser

        parser = build_parser()
    with _columns(100):
        parts = [f"```text\n{parser.format_usage()}```", arguments_table(parser)]
        for name, help_text, sub in subcommands(parser):
            parts += [
                f"## reskd {name} {{ #{anchor('reskd-' + name)} }}",
                _prose(sub.description or help_text),
                f"```text\n{sub.format_usage()}```",
                arguments_table(sub),
            ]
    return "\n\n".join(parts)


# --- the HTTP API -------------------------------------------------------------------------


def openapi_document() -> Schema:
    """The service's OpenAPI document, from an app built on a throwaway SQLite database (with a
    token, so the document shows what a token-guarded service asks for)."""
    from api.http.main import create_app
    from api.runtime.settings import Settings

    with tempfile.TemporaryDirectory() as root:
        db = f"sqlite:///{Path(root).resolve() / 'reskd.db'}"  # never a RESKD_DATABASE_URL's
        app = create_app(Settings(artifact_root=Path(root), database_url=db, token="documentation"))
        try:
            return app.openapi()
        finally:
            app.state.db.dispose()


def _media_schema(content: Schema) -> tuple[str, Schema] | None:
    for media, body in content.items():
        return media, body.get("schema", {})
    return None


def render_http(document: Schema | None = None) -> str:
    """Each path and method: summary, description, parameters, body and responses; then the
    schemas that are not run-config models (those link to the configuration page)."""
    document = document or openapi_document()
    config_models = set(run_config_schema().get("$defs", {})) | {"RunConfig"}
    components = document.get("components", {}).get("schemas", {})

    def link(name: str) -> str:
        if name in config_models:
            return f"[{name}]({CONFIG_PAGE}#{anchor(name)})"
        return local_link(name)

    parts = [
        f"**{document['info']['title']}**, version {document['info']['version']}. "
        + _prose(document["info"].get("description", ""))
    ]
    for path, item in document["paths"].items():
        for method, op in item.items():
            parts.append(f"## {method.upper()} `{path}`")
            text = op.get("summary", "")
            if op.get("description"):
                text = _prose(op["description"])
            if text:
                parts.append(text)
            if op.get("security"):
                parts.append("Needs `Authorization: Bearer <token>` when the service has one.")
            params = op.get("parameters", [])
            if params:
                rows = [
                    "| parameter | in | type | required | description |",
                    "|---|---|---|---|---|",
                ]
                for p in params:
                    schema = p.get("schema", {})
                    rows.append(
                        f"| `{p['name']}` | {p['in']} | {type_text(schema, link)} | "
                        f"{'yes' if p.get('required') else 'no'} | "
                        f"{_cell(p.get('description', schema.get('description', '')))} |"
                    )
                parts.append("\n".join(rows))
            body = op.get("requestBody")
            if body:
                found = _media_schema(body.get("content", {}))
                if found:
                    media, schema = found
                    parts.append(
                        f"Body (`{media}`): {type_text(schema, link) if schema else 'raw bytes'}."
                    )
            rows = ["| status | meaning | body |", "|---|---|---|"]
            for code, response in op.get("responses", {}).items():
                found = _media_schema(response.get("content", {}))
                shape = type_text(found[1], link) if found and found[1] else ""
                rows.append(f"| {code} | {_cell(response.get('description', ''))} | {shape} |")
            parts.append("\n".join(rows))
    parts.append("## Schemas")
    parts += [
        model_section(name, components[name], link, level=3)
        for name in sorted(components)
        if name not in config_models
    ]
    return "\n\n".join(parts)


# --- the hook -----------------------------------------------------------------------------

MARKERS: dict[str, Callable[[], str]] = {
    "<!-- reference:config -->": render_config,
    "<!-- reference:sweep -->": render_sweep,
    "<!-- reference:cli -->": render_cli,
    "<!-- reference:http -->": render_http,
}


def on_page_markdown(markdown: str, **_: Any) -> str:
    for marker, render in MARKERS.items():
        if marker in markdown:
            markdown = markdown.replace(marker, render())
    return markdown
