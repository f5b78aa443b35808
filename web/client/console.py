"""The back-office console (SPEC 9): what an administrator does, and the audit log.

Its actions are the flows for administrators (``access: admin`` in flows.yaml), started
and stepped like any other through the generic renderer; a one-time password they
hand out is shown once, as their descriptions' ``replies`` say. The audit log is what
``GET /api/admin/audit`` serves, filtered by actor, action and target, a page at a time
(newest first; the next page starts below the last entry shown).

The log names actors and targets by raw ids (``admin:<id>``, ``account:<id>``); the
table names them as people do (an administrator's login name, a person's masked name
and login name, an organisation's name), all of a page's in one query, and keeps the
raw id beside each for auditors. The actor and target filters take a login name too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import orjson
from aiohttp import web

from flows.accounts import AccountName, Accounts
from web.admin import account_id_of, account_refs, audit_entry, named_accounts, shown_name
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
        accounts = request.app[SERVICES].accounts
        rows = await accounts.audit_page(
            before=before, limit=PAGE_SIZE + 1, action=filters.get("action"),
            actor=await account_refs(accounts, filters.get("actor"), as_actor=True),
            target=await account_refs(accounts, filters.get("target"), as_actor=False))
        entries = [_shown(audit_entry(r)) for r in rows[:PAGE_SIZE]]
        more = len(rows) > PAGE_SIZE
        await _name(accounts, entries)
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


# Actors that are no account, named by the catalogue: a browser not signed in (its
# device), the clock.
_NOT_ACCOUNTS = {"device": "actor_device", "timer": "actor_timer",
                 "anonymous": "actor_anonymous"}


async def _name(accounts: Accounts, entries: list[dict[str, Any]]) -> None:
    """Give each entry's actor and target the name people know them by (one query for
    the page); the raw id stays."""
    found = await named_accounts(accounts, entries)
    for e in entries:
        e["actor_named"] = _who(e["actor"], found)
        e["target_named"] = _who(e["target"], found)


def _who(ref: object, names: Mapping[str, AccountName]) -> dict[str, Any]:
    """How the table shows an actor or a target: ``name`` (data, as it is), or ``text``
    (a catalogue key), ``login`` beside a person's masked name, ``kind`` (a catalogue
    key); ``raw``, the id as the log holds it."""
    shown: dict[str, Any] = {"raw": ref, "name": None, "text": None, "login": None,
                             "kind": None}
    account_id = account_id_of(ref)
    found = names.get(account_id) if account_id else None
    if found is not None:
        shown["kind"] = f"kind_{found.kind}"
        shown["name"] = shown_name(found)
        if found.kind not in ("admin", "organisation"):
            # Beside a person's masked name, the login name (what the back office
            # resets a password by) to tell people apart.
            shown["login"] = found.login_name
    elif isinstance(ref, str) and ref.partition(":")[0] in _NOT_ACCOUNTS:
        shown["text"] = _NOT_ACCOUNTS[ref.partition(":")[0]]
    return shown
