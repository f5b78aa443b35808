"""The API described: the OpenAPI document, its interactive page, and a page per error id.

- ``GET /api/openapi.json``: the document, built from the flows being served;
- ``GET /api/docs``: Swagger UI on that document. Its assets come from the
  ``swagger-ui-py`` package (Apache-2.0, as is the Swagger UI it ships) and are served
  by this app, never from a CDN; the page has no inline script, so a strict
  Content-Security-Policy can stay strict;
- ``GET /problems`` and ``GET /problems/{error_id}``: what a problem's ``type`` points
  at: the error id's status, its messages in Chinese and English and what to do; HTML for
  a browser, JSON for ``Accept: application/json``.
"""

from __future__ import annotations

import asyncio
import html
from importlib.resources import files
from pathlib import Path
from typing import Any

from aiohttp import web

from web.catalogue import ProblemType, catalogue, code_occurrences, kind_text
from web.keys import REGISTRY, RUNTIME, SETTINGS
from web.openapi import document
from web.problems import HttpProblem, json_response

docs_routes = web.RouteTableDef()

# The files of the Swagger UI distribution the page loads; nothing else is served.
_ASSETS = {
    "swagger-ui.css": "text/css",
    "swagger-ui-bundle.js": "text/javascript",
    "favicon-32x32.png": "image/png",
    "favicon-16x16.png": "image/png",
}
ASSET_DIR = Path(str(files("swagger_ui") / "static"))

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Identity self-service flows: HTTP API</title>
<link rel="stylesheet" href="/api/docs/assets/swagger-ui.css">
<link rel="icon" type="image/png" href="/api/docs/assets/favicon-32x32.png" sizes="32x32">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/api/docs/assets/swagger-ui-bundle.js"></script>
<script src="/api/docs/init.js"></script>
</body>
</html>
"""

# BaseLayout: no bar to load another document from an address typed into the page.
_INIT = """window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "/api/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout"
  });
});
"""


@docs_routes.get("/api/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return json_response(document(request.app[RUNTIME].flows, request.app[REGISTRY]))


@docs_routes.get("/api/docs")
async def api_page(request: web.Request) -> web.Response:
    return web.Response(text=_PAGE, content_type="text/html", charset="utf-8")


@docs_routes.get("/api/docs/init.js")
async def api_page_script(request: web.Request) -> web.Response:
    return web.Response(text=_INIT, content_type="text/javascript", charset="utf-8",
                        headers={"Cache-Control": "public, max-age=3600"})


@docs_routes.get("/api/docs/assets/{name}")
async def api_page_asset(request: web.Request) -> web.FileResponse:
    name = request.match_info["name"]
    if name not in _ASSETS:
        raise web.HTTPNotFound()
    kind = _ASSETS[name]
    if kind.startswith("text/"):
        kind += "; charset=utf-8"
    return web.FileResponse(ASSET_DIR / name, headers={
        "Content-Type": kind, "Cache-Control": "public, max-age=86400"})


# -- error pages ----------------------------------------------------------------------------

def _wants_json(request: web.Request) -> bool:
    """Whether the client prefers JSON to HTML (by the Accept header's q-values)."""
    best: dict[str, float] = {}
    for part in request.headers.get("Accept", "").split(","):
        kind, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for param in params:
            if param.startswith("q="):
                try:
                    q = float(param[2:])
                except ValueError:
                    q = 0.0
        best[kind.lower()] = max(q, best.get(kind.lower(), 0.0))
    as_json = max(best.get("application/json", 0.0), best.get("application/problem+json", 0.0))
    return as_json > 0 and as_json > best.get("text/html", 0.0)


async def problem_types(request: web.Request) -> dict[str, ProblemType]:
    """Every error id this server can answer with, for the flows it serves now."""
    app = request.app
    modules = app[SETTINGS].flow_modules
    # The first time, the code is read (some 0.4 s of parsing): not on the event loop.
    await asyncio.to_thread(code_occurrences, modules)
    return catalogue(app[RUNTIME].flows, modules, app[REGISTRY])


_CSS = """body{font-family:system-ui,"PingFang SC","Microsoft YaHei",sans-serif;max-width:48rem;
margin:1.5rem auto;padding:0 1rem;color:#222;line-height:1.55}
code{background:#f3f3f3;padding:0 .25em;border-radius:3px}
table{border-collapse:collapse;width:100%}td,th{border:1px solid #ddd;padding:.3rem .5rem;
text-align:left;vertical-align:top}th{background:#f7f7f7}.todo{background:#f0f7ff;
border-left:4px solid #3b82f6;padding:.5rem 1rem}"""


def _html(title: str, body: str) -> web.Response:
    page = (f'<!DOCTYPE html>\n<html lang="zh-CN">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n"
            f"<body>\n{body}\n</body>\n</html>\n")
    return web.Response(text=page, content_type="text/html", charset="utf-8")


def _status(value: int | None) -> str:
    return str(value) if value is not None else "varies / 视情况而定"


@docs_routes.get("/problems")
async def problem_index(request: web.Request) -> web.Response:
    types = await problem_types(request)
    if _wants_json(request):
        return json_response({"problems": [t.as_dict() for t in types.values()]})
    rows = "\n".join(
        f'<tr><td><a href="/problems/{eid}"><code>{eid}</code></a></td>'
        f"<td>{_status(t.status)}</td><td>{html.escape(t.occurrences[0].zh)}<br>"
        f"{html.escape(t.occurrences[0].en)}</td></tr>" for eid, t in types.items())
    return _html("错误编号 / Error ids", (
        "<h1>错误编号 / Error ids</h1>\n<p>Every <code>error_id</code> this service answers "
        "with; a problem's <code>type</code> is its page. 服务可能返回的每个错误编号。</p>\n"
        f"<table><tr><th>error_id</th><th>HTTP</th><th>中文 / English</th></tr>\n{rows}"
        '</table>\n<p><a href="/api/docs">HTTP API</a></p>'))


@docs_routes.get("/problems/{error_id}")
async def problem_page(request: web.Request) -> web.Response:
    found = (await problem_types(request)).get(request.match_info["error_id"])
    if found is None:
        raise HttpProblem(404, "not_found", "没有这个错误编号", "No such error id")
    if _wants_json(request):
        return json_response(found.as_dict())
    return _html(found.error_id, _problem_body(found))


def _problem_body(found: ProblemType) -> str:
    rows = []
    for said in found.as_dict()["messages"]:
        zh_kind, en_kind = kind_text(said["kind"])
        rows.append(f"<tr><td>{_status(said['status'])}</td><td>{html.escape(zh_kind)}<br>"
                    f"{html.escape(en_kind)}</td><td>{html.escape(said['zh'])}</td>"
                    f"<td>{html.escape(said['en'])}</td></tr>")
    todo = ""
    if found.todo:
        todo = (f'<h2>怎么办 / What to do</h2>\n<div class="todo"><p>{html.escape(found.todo[0])}'
                f"</p><p>{html.escape(found.todo[1])}</p></div>")
    parts: list[Any] = [
        f"<h1><code>{html.escape(found.error_id)}</code></h1>",
        "<table><tr><th>HTTP</th><th>出现在 / Where it shows</th><th>中文</th>"
        "<th>English</th></tr>", *rows, "</table>", todo,
        '<p><a href="/problems">所有错误编号 / All error ids</a> · '
        '<a href="/api/docs">HTTP API</a></p>']
    return "\n".join(str(p) for p in parts if p)
