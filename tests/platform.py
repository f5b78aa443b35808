"""A running platform for end-to-end tests: the real flows.yaml, sandbox providers, HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import uuid
from collections.abc import AsyncIterator, Mapping
from datetime import date
from typing import Any

import attrs
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests import leaks
from web import keys

DIGITS = "0123456789"
_WEIGHTS = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
_CREDIT_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_CREDIT_WEIGHTS = [1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28]


# Real region codes (GB/T 2260), current and former ones (崇文区 until 2010, 潮阳县
# 1983-1993), one or more a province, and the residence permits' codes.
REGION_CODES = (
    "110101", "110103", "110104", "110105", "120101", "130102", "140105", "150102",
    "210102", "220102", "230102", "310101", "310103", "320102", "330106", "340104",
    "350102", "360426", "370102", "410105", "420106", "430104", "440106", "440113",
    "440305", "440524", "450102", "460105", "500103", "500221", "510104", "520102",
    "530102", "540102", "610103", "620102", "630102", "640104", "650102", "810000",
    "820000", "830000",
)


def new_id_number(rng: random.Random | None = None) -> str:
    """A fresh, valid resident ID number (real region, random birth date and sequence)."""
    r = rng or random.Random()
    born = date(1950, 1, 1).toordinal() + r.randrange(20000)
    body = f"{r.choice(REGION_CODES)}{date.fromordinal(born):%Y%m%d}{r.randrange(1000):03d}"
    check = "10X98765432"[sum(int(c) * w for c, w in zip(body, _WEIGHTS, strict=True)) % 11]
    return leaks.remember(body + check)


def new_credit_code(rng: random.Random | None = None) -> str:
    r = rng or random.Random()
    body = "91" + f"{r.randrange(110000, 659999)}" + "".join(
        r.choice(_CREDIT_ALPHABET) for _ in range(9))
    total = sum(_CREDIT_ALPHABET.index(c) * w for c, w in zip(body, _CREDIT_WEIGHTS,
                                                               strict=True))
    return body + _CREDIT_ALPHABET[(31 - total % 31) % 31]


def new_mobile(rng: random.Random | None = None) -> str:
    r = rng or random.Random()
    return leaks.remember("1" + r.choice("3456789") + "".join(r.choice(DIGITS)
                                                              for _ in range(9)))


_FULL_WIDTH = {ord(c): ord(c) + 0xFEE0 for c in "0123456789X"}


def mobile_spellings(phone: str) -> list[str]:
    """Ways people type one mobile number (remembered for the leak scan)."""
    spellings = [f"{phone[:3]} {phone[3:7]} {phone[7:]}", f"+86{phone}", f"+86 {phone}",
                 f"0086{phone}", f"86{phone}", f"{phone[:3]}-{phone[3:7]}-{phone[7:]}",
                 phone.translate(_FULL_WIDTH), f"\u3000{phone}\u3000"]
    leaks.remember(phone, *spellings)
    return spellings


def id_spellings(id_number: str) -> list[str]:
    """Ways people type one ID number (remembered for the leak scan)."""
    spellings = [id_number.lower(), f"{id_number[:6]} {id_number[6:14]} {id_number[14:]}",
                 id_number.translate(_FULL_WIDTH)]
    leaks.remember(id_number, *spellings)
    return spellings


def new_login_name() -> str:
    return "u" + uuid.uuid4().hex[:12]


PASSWORD = "Correct-Horse-7"
# 0 is not in the captcha alphabet: this answer is never right.
WRONG_CAPTCHA = "0000"


@attrs.frozen
class Answer:
    """What a client gets back from one step, as ``Platform.answer`` makes it comparable."""

    status: int
    headers: dict[str, str]
    body: Any

    @property
    def error_ids(self) -> list[str]:
        return [e["error_id"] for e in self.body.get("errors", [])]


@attrs.define
class Platform:
    client: TestClient
    app: web.Application

    @contextlib.asynccontextmanager
    async def another_browser(self) -> AsyncIterator[TestClient]:
        """A second client of the same server, with cookies (so a device) of its own."""
        client = TestClient(self.client.server)
        try:
            yield client
        finally:
            await client.session.close()  # not client.close(): that stops the server

    async def start(self, flow: str, **kw: Any) -> dict[str, Any]:
        resp = await self.client.post(f"/api/flows/{flow}", **kw)
        assert resp.status == 201, await resp.text()
        return dict(await resp.json())

    async def step(self, iid: str, trigger: str, body: dict[str, Any] | None = None,
                   **kw: Any) -> tuple[int, dict[str, Any]]:
        resp = await self.client.post(f"/api/flows/{iid}/events/{trigger}", json=body or {},
                                      **kw)
        return resp.status, dict(await resp.json())

    async def answer(self, iid: str, trigger: str, body: dict[str, Any] | None = None,
                     *, placeholders: Mapping[str, str] | None = None) -> Answer:
        """A step's whole answer, comparable with another instance's: the status, every
        header but the date and request id, and the body without its request id, with
        the instance id (and each key of ``placeholders``) replaced by a placeholder."""
        resp = await self.client.post(f"/api/flows/{iid}/events/{trigger}", json=body or {})
        text = await resp.text()
        for plain, placeholder in {iid: "<instance>", **(placeholders or {})}.items():
            text = text.replace(plain, placeholder)
        parsed = json.loads(text)
        parsed.pop("request_id", None)
        headers = {k: v for k, v in resp.headers.items()
                   if k.lower() not in ("date", "x-request-id")}
        return Answer(resp.status, headers, parsed)

    async def ok(self, iid: str, trigger: str, body: dict[str, Any] | None = None,
                 **kw: Any) -> dict[str, Any]:
        status, answer = await self.step(iid, trigger, body, **kw)
        assert status == 200, answer
        return answer

    async def get(self, iid: str) -> dict[str, Any]:
        resp = await self.client.get(f"/api/flows/{iid}")
        assert resp.status == 200, await resp.text()
        return dict(await resp.json())

    async def captcha(self, iid: str, client: TestClient | None = None) -> str:
        """Fetch a captcha image and read its answer on the sandbox, as a client would
        (this platform's client, or another one that holds the instance)."""
        client = client or self.client
        resp = await client.get(f"/api/flows/{iid}/captcha")
        assert resp.status == 200, await resp.text()
        assert (await resp.read()).startswith(b"\xff\xd8\xff")  # a JPEG
        resp = await client.get("/sandbox/captchas.json", params={"instance": iid})
        assert resp.status == 200, await resp.text()
        return str((await resp.json())["captchas"][0]["answer"])

    async def deliver_outbox(self) -> None:
        while await self.app[keys.OUTBOX].run_once():
            pass

    async def sms_code(self, phone: str) -> str | None:
        """The newest code the sandbox SMS inbox holds for a phone."""
        await self.deliver_outbox()
        resp = await self.client.get("/sandbox/sms.json", params={"phone": phone})
        messages = (await resp.json())["messages"]
        if not messages:
            return None
        text = messages[0]["text"]
        return "".join(ch for ch in text.split("验证码为", 1)[1][:6])

    async def face(self, iid: str | None, result: str, *, qr_url: str | None = None) -> None:
        """Press pass or fail on the sandbox phone page for the flow's face session (or
        for the session of ``qr_url``)."""
        if qr_url is None:
            assert iid is not None
            qr_url = (await self.get(iid))["ui"]["data"]["qr_url"]
        path = qr_url.split("://", 1)[1].split("/", 1)[1]
        resp = await self.client.post("/" + path, data={"result": result},
                                      allow_redirects=False,
                                      headers={"Origin": str(self.client.make_url(""))})
        assert resp.status in (200, 303), await resp.text()

    async def wait_for(self, iid: str, state: str, *, seconds: float = 10.0) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + seconds
        while True:
            view = await self.get(iid)
            if view["state"] == state:
                return view
            assert asyncio.get_running_loop().time() < deadline, view["state"]
            await asyncio.sleep(0.05)
