"""The back office's read-only API: the audit log, for administrators only."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web

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


@admin_routes.get("/api/admin/audit")
async def audit_log(request: web.Request) -> web.Response:
    """What administrators did, newest first; filters: target, actor, action; paging."""
    session = signed_in(request)
    if session.kind != "admin":
        raise HttpProblem(403, "admin_only", "仅限后台管理员", "Only administrators may do this")
    limit = _int(request, "limit", 100, low=1, high=MAX_LIMIT)
    before = _int(request, "before", None, low=1, high=2**62)
    rows = await request.app[SERVICES].accounts.audit_page(
        target=_text(request, "target"), actor=_text(request, "actor"),
        action=_text(request, "action"), before=before, limit=limit or 100)
    entries = [audit_entry(r) for r in rows]
    more = len(entries) == limit and entries
    return json_response(
        {"entries": entries, "next_before": entries[-1]["id"] if more else None})
