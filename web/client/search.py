"""A field's search, for a browser without scripts.

A field whose description has a ``search`` address (web/views.py's ``WIDGET_LINKS``: the
bank branch field's ``/api/branches``) gets a search button beside it. With scripts
off, the button sends the step's form here: the same step comes back with what matched
offered as radio buttons (the value sent is the match's value, the branch's code), and
what was typed in the other fields kept, as after a refusal (never a secret, never
personal data: those fields say to type them again). Nothing is stepped or stored.

A POST, not a GET, although it only reads: the button is in the step's form, and a GET
would put all of that form in the address (the CSRF token, a password, an account
number), where logs and the browser's history keep it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from engine import EngineError
from web.client.messages import text
from web.client.views import (
    _check_csrf,
    _kept,
    _mine,
    _not_kept,
    _PageError,
    _redirect,
    _step_page,
    client_routes,
    pages,
)
from web.keys import RUNTIME
from web.sandbox import BRANCHES
from web.views import add_links

# Matches offered at most; more: the page says to type more of the name.
SHOWN = 10
_LONGEST = 100

Search = Callable[[web.Application, str, int], Awaitable[list[dict[str, str]]]]


async def _branches(app: web.Application, query: str, limit: int) -> list[dict[str, str]]:
    return [{"value": b.code, "label": b.name}
            for b in await app[BRANCHES].search(query, limit)]


# What each search address a description may give answers, as options: the value sent,
# the label shown. The address's own JSON answer says the same to a script.
SEARCHES: dict[str, Search] = {"/api/branches": _branches}


def _error(field: str, key: str) -> dict[str, Any]:
    return {"field": field, "zh": text(key, "zh"), "en": text(key, "en")}


@client_routes.post("/f/{id}/search/{field}")
@pages
async def search(request: web.Request) -> web.StreamResponse:
    """The step again, with the field's matches to pick from."""
    form = await request.post()
    _check_csrf(request, form)
    runtime = request.app[RUNTIME]
    instance = await _mine(request, request.match_info["id"])
    version = form.get("version")
    if not isinstance(version, str) or version != str(instance.version):
        return _redirect(request, f"/f/{instance.id}?stale=1")
    fields = add_links(await runtime.view(instance))["ui"]["fields"]
    name = request.match_info["field"]
    field = next((f for f in fields if f["name"] == name), None)
    searcher = SEARCHES.get(field.get("search") or "") if field is not None else None
    if field is None or searcher is None or field["locked"]:
        raise _PageError(404, "not_found")
    # The box under the matches, once there are matches; else the field itself.
    typed = form.get(f"search-{name}", form.get(name))
    query = typed.strip() if isinstance(typed, str) else ""
    others = [f for f in fields if f["name"] != name]
    kept = {**_kept(others, form), name: query}
    status, found, retry_after = 200, None, None
    errors: list[dict[str, Any]] = []
    if not query:
        status, errors = 422, [_error(name, "search_empty")]
    elif len(query) > _LONGEST:
        status, errors = 422, [_error(name, "search_too_long")]
    else:
        try:
            options = await searcher(request.app, query, SHOWN + 1)
        except EngineError as exc:  # the directory is down or slow: said under the field
            body = exc.problem()
            status, retry_after = int(body["status"]), body.get("retry_after")
            errors = [{"field": name, **(body.get("message") or {"zh": exc.zh, "en": exc.en})}]
        else:
            if options:
                found = {name: {"query": query, "options": options[:SHOWN],
                                "more": len(options) > SHOWN}}
            else:
                errors = [_error(name, "search_none")]
    response = await _step_page(request, instance, status=status, errors=errors,
                                entered=kept, searched=found,
                                retype=_not_kept(others, form))
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response
