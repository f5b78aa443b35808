"""The back-office console (SPEC 9): what an administrator does, and the audit log.

Its actions are the flows for administrators (``access: admin`` in flows.yaml), started
and stepped like any other through the generic renderer; a one-time password they
hand out is shown once, as their descriptions' ``replies`` say. The audit log is what
``GET /api/admin/audit`` serves, filtered by actor, action and target, a page at a time
(newest first; the next page starts below the last entry shown).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import orjson
from aiohttp import web

from web.admin import audit_entry
from web.client.views import _PageError, _render, client_routes, pages
from web.keys import RUNTIME, SERVICES
from web.sessions import session_of

PAGE_SIZE = 20
FILTERS = ("actor", "action", "target")
_LONGEST = 200


@client_routes.get("/admin")
@pages
async def console(request: web.Request) -> web.StreamResponse:
    """Signed out: the administrators' sign-in; an administrator: actions and the log."""
    session = session_of(request)
    if session is None:
        return _render(request, "console.html", {"admin": False})
    if session.kind != "admin":
        raise _PageError(403, "admin_only")
    filters: dict[str, str] = {}
    errors: dict[str, str] = {}
    for name in FILTERS:
        value = request.query.get(name, "").strip()
        if len(value) > _LONGEST:
            errors[name] = "filter_too_long"
        elif value:
            filters[name] = value
    before_text = request.query.get("before", "")
    before = int(before_text) if before_text.isdigit() and len(before_text) < 19 else None
    entries: list[dict[str, Any]] = []
    more = False
    if not errors:
        rows = await request.app[SERVICES].accounts.audit_page(
            before=before, limit=PAGE_SIZE + 1, **filters)
        entries = [_shown(audit_entry(r)) for r in rows[:PAGE_SIZE]]
        more = len(rows) > PAGE_SIZE
    actions = [f for f in request.app[RUNTIME].flows.flows.values() if f.access == "admin"]
    return _render(request, "console.html", {
        "admin": True, "actions": actions, "entries": entries, "filters": filters,
        "typed": {n: request.query.get(n, "") for n in FILTERS}, "filter_errors": errors,
        "first_page": f"/admin?{urlencode(filters)}#audit" if before else None,
        "next_page": f"/admin?{urlencode({**filters, 'before': entries[-1]['id']})}#audit"
        if more and entries else None,
        "filter_link": lambda name, value: "/admin?" + urlencode({name: value}) + "#audit",
    }, status=422 if errors else 200)


def _shown(entry: dict[str, Any]) -> dict[str, Any]:
    """An entry as the table shows it: its details as compact JSON."""
    details = entry.get("details")
    entry["details_text"] = orjson.dumps(details, option=orjson.OPT_SORT_KEYS).decode() \
        if details else ""
    return entry
