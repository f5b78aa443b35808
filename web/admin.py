"""The back office's read-only API: the audit log, for administrators only.

The log names actors and targets by raw ids (``admin:<id>``, ``account:<id>``,
``organisation:<id>``); each entry also names the account behind them as people know
it (an administrator's login name, an organisation's name, a person's masked name and
login name), all of a page's in one query, and the actor and target filters take a
login name as well as a raw id. The console's table (web/client/console.py) shows the
same.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from aiohttp import web

from flows.accounts import AccountName, Accounts
from flows.support import mask
from web.keys import SERVICES
from web.problems import HttpProblem, json_response
from web.sessions import signed_in

admin_routes = web.RouteTableDef()

MAX_LIMIT = 500


def _int(request: web.Request, name: str, default: int | None, *, low: int,
         high: int) -> int | None:
    text = request.query.get(name)
    if text is None or text == "":
        return default
    if not text.isdigit() or not low <= int(text) <= high:
        raise HttpProblem(400, "query_invalid", f"参数 {name} 应为 {low}-{high} 之间的整数",
                          f"{name} must be a whole number from {low} to {high}", field=name)
    return int(text)


def _text(request: web.Request, name: str) -> str | None:
    text = request.query.get(name, "").strip()
    if len(text) > 200:
        raise HttpProblem(400, "query_invalid", f"参数 {name} 过长", f"{name} is too long",
                          field=name)
    return text or None


def audit_entry(row: dict[str, Any]) -> dict[str, Any]:
    at = row["at"]
    return {"id": row["id"], "at": at.isoformat() if isinstance(at, datetime) else str(at),
            "actor": row["actor"], "action": row["action"], "target": row["target"],
            "reason": row["reason"], "details": row["details"]}


# The prefixes of the log's actors and targets that an account id follows.
_ACCOUNT_REFS = ("admin", "account", "organisation")


def account_id_of(ref: object) -> str | None:
    """The account id an actor or target names (``account:<id>``), else None."""
    if not isinstance(ref, str):
        return None
    prefix, _, rest = ref.partition(":")
    return rest if prefix in _ACCOUNT_REFS and rest else None


async def account_refs(accounts: Accounts, value: str | None, *,
                       as_actor: bool) -> Sequence[str] | None:
    """What a filter matches: a raw id as typed; a login name (no colon), the ids the
    log names its account by: as an actor ``admin:<id>`` or ``account:<id>``, as a
    target ``account:<id>`` and, for an organisation, ``organisation:<id>``. A login
    name of nobody matches nothing."""
    if value is None:
        return None
    if ":" in value:
        return [value]
    account = await accounts.by_login_name(value)
    if account is None:
        return [value]
    if as_actor:
        return [f"admin:{account.id}" if account.kind == "admin" else f"account:{account.id}"]
    if account.kind == "organisation":
        return [f"account:{account.id}", f"organisation:{account.id}"]
    return [f"account:{account.id}"]


async def named_accounts(accounts: Accounts,
                         entries: Sequence[Mapping[str, Any]]) -> dict[str, AccountName]:
    """The accounts the entries' actors and targets name, by id: one query a page."""
    ids = {i for e in entries for ref in (e["actor"], e["target"])
           if (i := account_id_of(ref)) is not None}
    return {n.id: n for n in await accounts.names(sorted(ids))} if ids else {}


def shown_name(found: AccountName) -> str:
    """An account as people know it: an administrator by login name, an organisation
    by its registered name, a person by the first character of the name (personal data:
    the login name beside it tells people apart)."""
    if found.kind == "admin":
        return found.login_name
    if found.kind == "organisation":
        return found.organisation_name or found.display_name
    return mask("name", found.display_name)


def _account(ref: object, names: Mapping[str, AccountName]) -> dict[str, Any] | None:
    account_id = account_id_of(ref)
    found = names.get(account_id) if account_id else None
    if found is None:
        return None
    return {"id": found.id, "kind": found.kind, "name": shown_name(found),
            "login_name": found.login_name}


@admin_routes.get("/api/admin/audit")
async def audit_log(request: web.Request) -> web.Response:
    """What administrators did, newest first; filters: target, actor, action; paging."""
    session = signed_in(request)
    if session.kind != "admin":
        raise HttpProblem(403, "admin_only", "仅限后台管理员", "Only administrators may do this")
    limit = _int(request, "limit", 100, low=1, high=MAX_LIMIT)
    before = _int(request, "before", None, low=1, high=2**62)
    accounts = request.app[SERVICES].accounts
    rows = await accounts.audit_page(
        target=await account_refs(accounts, _text(request, "target"), as_actor=False),
        actor=await account_refs(accounts, _text(request, "actor"), as_actor=True),
        action=_text(request, "action"), before=before, limit=limit or 100)
    entries = [audit_entry(r) for r in rows]
    names = await named_accounts(accounts, entries)
    for entry in entries:
        entry["actor_account"] = _account(entry["actor"], names)
        entry["target_account"] = _account(entry["target"], names)
    more = len(entries) == limit and entries
    return json_response(
        {"entries": entries, "next_before": entries[-1]["id"] if more else None})
