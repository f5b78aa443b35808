"""The benchmark's load generator reads answers exactly, or refuses them."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web

from bench.steps import KeepAlive


async def _echo(request: web.Request) -> web.Response:
    body = await request.read()
    return web.Response(status=201, body=body + request.headers["X-Extra"].encode())


async def _chunked(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    response.enable_chunked_encoding()
    await response.prepare(request)
    await response.write(b"part")
    await response.write_eof()
    return response


async def _closing(request: web.Request) -> web.Response:
    return web.Response(body=b"bye", headers={"Connection": "close"})


@pytest.fixture
async def server(aiohttp_server: Any) -> Any:
    app = web.Application()
    app.router.add_post("/echo", _echo)
    app.router.add_post("/chunked", _chunked)
    app.router.add_post("/closing", _closing)
    return await aiohttp_server(app)


async def test_posts_many_times_over_one_connection(server: Any) -> None:
    conn = await KeepAlive.open(server.host, server.port)
    try:
        for n in range(3):
            status, text = await conn.post("/echo", f'{{"n":{n}}}'.encode(), "X-Extra: !\r\n")
            assert (status, text) == (201, f'{{"n":{n}}}!'.encode())
    finally:
        conn.close()


async def test_refuses_what_it_cannot_read(server: Any) -> None:
    conn = await KeepAlive.open(server.host, server.port)
    try:
        with pytest.raises(ValueError, match="chunked"):
            await conn.post("/chunked", b"{}", "")
    finally:
        conn.close()
    conn = await KeepAlive.open(server.host, server.port)
    try:
        with pytest.raises(ConnectionResetError):
            await conn.post("/closing", b"{}", "")
    finally:
        conn.close()
