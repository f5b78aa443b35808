"""A signed-in account's seal images: ``GET /api/me/seals`` and each seal's SVG and PNG.

Only the account that holds a seal sees it: anyone else gets the 404 a seal that does
not exist gets. Each image's ETag is the seal's content hash (strong: the same style and
text always draw the same bytes), so ``If-None-Match`` answers 304 until its style
changes. Drawing runs in an executor, and the last images drawn are kept per process.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from flows import sealart
from flows.seals import listing
from web.keys import SERVICES
from web.problems import HttpProblem, json_response
from web.sessions import signed_in

seal_routes = web.RouteTableDef()

# The browser keeps an image but asks again with its ETag each time it shows it (a 304
# while the style stands): a restyle keeps the URL, and the account page shown right
# after it drew the old style for up to a minute under "max-age=60".
CACHE_CONTROL = "private, no-cache"
_TYPES = {"svg": "image/svg+xml", "png": "image/png"}
_DRAW: Mapping[str, Callable[[sealart.Style, str], bytes]] = {"svg": sealart.svg,
                                                              "png": sealart.png}


def _not_found() -> HttpProblem:
    return HttpProblem(404, "seal_not_found", "没有这枚印章", "No such seal")


@functools.lru_cache(maxsize=64)
def _drawn(kind: str, style: tuple[tuple[str, Any], ...], text: str, fmt: str) -> bytes:
    # Keyed by what is drawn, not by the seal: a restyled seal draws anew.
    return _DRAW[fmt](sealart.Style.from_dict(dict(style)), text)


def _matches(header: str, etag: str) -> bool:
    """Whether If-None-Match names this ETag (weakly compared, as RFC 9110 says)."""
    tags = [t.strip().removeprefix("W/") for t in header.split(",")]
    return "*" in tags or etag.removeprefix("W/") in tags


@seal_routes.get("/api/me/seals")
async def my_seals(request: web.Request) -> web.Response:
    """The signed-in account's seals, oldest first, with their image URLs."""
    session = signed_in(request)
    seals = await request.app[SERVICES].seals.list(session.account_id)
    return json_response({"seals": listing(seals)},
                         headers={"Cache-Control": "private, no-cache"})


async def _image(request: web.Request, fmt: str) -> web.StreamResponse:
    session = signed_in(request)
    seal = await request.app[SERVICES].seals.get(session.account_id,
                                                  request.match_info["id"])
    if seal is None:
        raise _not_found()
    etag = sealart.etag(seal.content_hash)
    headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL,
               "Vary": "Cookie, Authorization"}
    if _matches(request.headers.get("If-None-Match", ""), etag):
        return web.Response(status=304, headers=headers)
    try:
        body = await asyncio.get_running_loop().run_in_executor(
            None, _drawn, seal.kind, tuple(sorted(seal.style.items())), seal.text, fmt)
    except sealart.MissingGlyphs:
        # The style was checked when the seal was made; only another font could do this.
        raise sealart.SealFontsMissing() from None
    disposition = "attachment" if request.query.get("download") in ("1", "true") \
        else "inline"
    headers["Content-Disposition"] = f'{disposition}; filename="seal-{seal.id}.{fmt}"'
    return web.Response(body=body, content_type=_TYPES[fmt], headers=headers)


@seal_routes.get("/api/me/seals/{id}.svg")
async def seal_svg(request: web.Request) -> web.StreamResponse:
    """The seal as SVG: glyph outlines, sized in millimetres."""
    return await _image(request, "svg")


@seal_routes.get("/api/me/seals/{id}.png")
async def seal_png(request: web.Request) -> web.StreamResponse:
    """The seal as a 300 dpi PNG on a transparent ground."""
    return await _image(request, "png")
