"""The browser's side: the dashboard at ``/`` and the API's docs at ``/docs`` and ``/redoc``, all
from files shipped in the package (``api/http/static``), so they work with no internet.

Vendored at pinned versions, each with its licence next to it: Chart.js 4.4.7 (MIT; the charts),
js-yaml 4.3.2 (MIT; the submit page reads YAML or JSON), Swagger UI 5.17.14 (Apache-2.0; the
first that renders OpenAPI 3.1, which FastAPI writes) and ReDoc 2.4.0 (MIT). The pages hold no
data: they read the API with the bearer token the user types once (kept in the tab's session
storage, sent as the Authorization header, never in a URL), so they need no token themselves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

from api.http.access import access

STATIC = Path(__file__).parent / "static"
# the shipped run configs (a source checkout's configs/): the submit page starts from one
CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SWAGGER = "/static/vendor/swagger-ui-5.17.14"
REDOC = "/static/vendor/redoc-2.4.0"


# Pages load nothing from elsewhere (ReDoc's footer logo would come from its CDN otherwise).
R = TypeVar("R", bound=Response)
CSP = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self' 'unsafe-inline'; worker-src 'self' blob:; connect-src 'self'"
)


def _local(response: R) -> R:
    response.headers["Content-Security-Policy"] = CSP
    return response


def mount(app: FastAPI) -> None:
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return _local(FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8"))

    @app.get("/v1/examples", tags=["jobs"], **access("read"))
    def examples() -> dict[str, list[dict[str, Any]]]:
        """The shipped run configs (``configs/``, sweeps left out) a submission can start from."""
        found = []
        for path in sorted(CONFIGS.glob("*.yaml")) + sorted(CONFIGS.glob("paper/*.yaml")):
            config = yaml.safe_load(path.read_text())
            if isinstance(config, dict) and "dataset" in config and "space" not in config:
                found.append({"name": str(path.relative_to(CONFIGS)), "config": config})
        return {"examples": found}

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return _local(
            get_swagger_ui_html(
                openapi_url="/openapi.json",
                title=f"{app.title} - API docs",
                swagger_js_url=f"{SWAGGER}/swagger-ui-bundle.js",
                swagger_css_url=f"{SWAGGER}/swagger-ui.css",
                swagger_favicon_url=f"{SWAGGER}/favicon-32x32.png",
            )
        )

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return _local(
            get_redoc_html(
                openapi_url="/openapi.json",
                title=f"{app.title} - ReDoc",
                redoc_js_url=f"{REDOC}/redoc.standalone.js",
                redoc_favicon_url=f"{SWAGGER}/favicon-32x32.png",
                with_google_fonts=False,
            )
        )
