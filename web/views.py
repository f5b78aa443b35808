"""What the web layer adds to a UI description: the addresses a field's widget reads.

The engine describes a step without knowing this server's routes; a client still must
not hard-code them. Every answer that carries a description (``GET /api/flows/{id}``,
each step, the web client's pages) goes through ``add_links``.
"""

from __future__ import annotations

from typing import Any

# A widget's address: where a client gets what the widget shows.
WIDGET_LINKS = {
    # A new image each time; the previous one stops working.
    "captcha": ("image", "/api/flows/{id}/captcha"),
    # GET with ?q= part of the branch name: [{code, name, ...}]; the value is the code.
    "branch_search": ("search", "/api/branches"),
}


def add_links(view: dict[str, Any]) -> dict[str, Any]:
    """Give each field whose widget reads a server address that address (``view`` is
    ``Runtime.view``'s answer; changed in place and returned)."""
    for field in view.get("ui", {}).get("fields", []):
        link = WIDGET_LINKS.get(field.get("widget") or "")
        if link is not None:
            field[link[0]] = link[1].format(id=view["id"])
    return view
