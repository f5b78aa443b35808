"""Electronic seals (SPEC 10.1.2, 10.2.1), end to end over HTTP: ``create_seal``,
``change_seal_style`` and ``delete_seal`` in flows.yaml, and the images at
``/api/me/seals/{id}.svg`` and ``.png`` (web/seals.py).

Accounts are inserted through the Accounts port with a session made as sign-in makes
one (tests/flows/test_verification.py); requests carry it as a bearer token.
"""

from __future__ import annotations

import asyncio
import io
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from PIL import Image

from engine import DuplicateKey
from flows import sealart
from flows.seals import ORGANISATION_SEALS
from tests.flows.test_verification import Who, new_organisation, new_person
from tests.platform import Platform
from web import keys
from web import seals as seal_routes

ORG_NAME = "测试科技有限公司"


async def start(p: Platform, who: Who, flow: str) -> tuple[int, dict[str, Any]]:
    resp = await p.client.post(f"/api/flows/{flow}", headers=who.auth)
    return resp.status, dict(await resp.json())


async def step(p: Platform, who: Who, iid: str, trigger: str,
               body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    return await p.step(iid, trigger, body, headers=who.auth)


async def ok(p: Platform, who: Who, iid: str, trigger: str,
             body: dict[str, Any] | None = None) -> dict[str, Any]:
    status, view = await step(p, who, iid, trigger, body)
    assert status == 200, view
    return view


def values(view: dict[str, Any]) -> dict[str, Any]:
    return {f["name"]: f["value"] for f in view["ui"]["fields"]}


def field_errors(body: dict[str, Any]) -> list[tuple[str | None, str]]:
    return [(e["field"], e["error_id"]) for e in body.get("errors", [])]


async def to_style(p: Platform, who: Who) -> tuple[str, dict[str, Any]]:
    """Start create_seal and go on to the style step; the instance id and its view."""
    status, view = await start(p, who, "create_seal")
    assert status == 201, view
    return view["id"], await ok(p, who, view["id"], "next")


async def create(p: Platform, who: Who, **style: Any) -> dict[str, Any]:
    """Make a seal with the form's values but ``style``; the final state's data."""
    iid, view = await to_style(p, who)
    body = {k: v for k, v in values(view).items() if v is not None} | style
    view = await ok(p, who, iid, "submit", body)
    assert view["state"] == "done", view
    return {"id": iid, **view["ui"]["data"]}


async def image(p: Platform, url: str, who: Who | None, **headers: str) -> Any:
    return await p.client.get(url, headers={**(who.auth if who else {}), **headers})


async def history(p: Platform, who: Who, iid: str) -> list[dict[str, Any]]:
    resp = await p.client.get(f"/api/flows/{iid}/history", headers=who.auth)
    assert resp.status == 200
    return list((await resp.json())["events"])


async def audit(p: Platform, who: Who) -> list[dict[str, Any]]:
    return await p.app[keys.SERVICES].accounts.audit_entries(  # type: ignore[attr-defined,no-any-return]
        f"account:{who.account_id}")


async def test_a_person_makes_views_restyles_and_deletes_a_square_seal(
        platform: Platform) -> None:
    person = await new_person(platform)
    status, view = await start(platform, person, "create_seal")
    assert status == 201, view
    assert view["ui"]["data"] == {"kind": "square", "text": "李四之印", "count": 0, "cap": 1}
    iid = view["id"]
    view = await ok(platform, person, iid, "next")
    assert view["state"] == "square_style"
    assert values(view) == {"size": "20", "colour": "#d00000", "rim": "1.0",
                            "font": "serif_bold"}
    view = await ok(platform, person, iid, "submit", values(view))
    made = view["ui"]["data"]
    seal_id = made["seal_id"]
    assert made["svg_url"] == f"/api/me/seals/{seal_id}.svg"
    assert made["png_url"] == f"/api/me/seals/{seal_id}.png"
    digest = made["content_hash"]
    assert len(digest) == 64

    # The history names what the seal shows; the audit log who made it.
    facts = [e["facts"] for e in await history(platform, person, iid)]
    assert facts[-1]["make_seal"]["content_hash"] == digest
    assert facts[-1]["make_seal"]["text"] == "李四"
    (entry,) = [e for e in await audit(platform, person) if e["action"] == "create_seal"]
    assert entry["details"]["content_hash"] == digest
    assert entry["actor"] == f"account:{person.account_id}"

    svg = await image(platform, made["svg_url"], person)
    assert svg.status == 200
    assert svg.content_type == "image/svg+xml"
    assert svg.headers["ETag"] == sealart.etag(digest)
    # Kept, but asked for again each time (a restyle keeps the URL): never shown stale.
    assert svg.headers["Cache-Control"] == "private, no-cache"
    assert svg.headers["Content-Disposition"].startswith("inline")
    root = ET.fromstring(await svg.read())  # noqa: S314 - our own SVG
    assert root.get("width") == "20mm"
    assert b"<text" not in await svg.read()
    png = await image(platform, made["png_url"], person)
    assert png.status == 200
    assert png.content_type == "image/png"
    assert png.headers["ETag"] == sealart.etag(digest)
    picture = Image.open(io.BytesIO(await png.read()))
    assert picture.size == (236, 236)
    assert round(picture.info["dpi"][0]) == 300
    again = await image(platform, made["png_url"], person,
                        **{"If-None-Match": sealart.etag(digest)})
    assert again.status == 304
    assert await again.read() == b""
    download = await image(platform, made["png_url"] + "?download=1", person)
    assert download.headers["Content-Disposition"] == \
        f'attachment; filename="seal-{seal_id}.png"'

    listed = await platform.client.get("/api/me/seals", headers=person.auth)
    (seal,) = (await listed.json())["seals"]
    assert (seal["id"], seal["kind"], seal["summary"], seal["content_hash"]) == (
        seal_id, "square", "李四之印（20mm）", digest)

    # One seal a person: a second is refused at the start.
    status, body = await start(platform, person, "create_seal")
    assert (status, body["error_id"]) == (409, "seal_limit_reached")

    # Another style: the same URL, another ETag; the old one no longer matches.
    status, view = await start(platform, person, "change_seal_style")
    assert status == 201, view
    assert [c["value"] for c in view["ui"]["fields"][0]["choices"]] == [seal_id]
    view = await ok(platform, person, view["id"], "next", {"seal": seal_id})
    assert values(view) == {"size": "20", "colour": "#d00000", "rim": "1.0",
                            "font": "serif_bold"}
    status, body = await step(platform, person, view["id"], "submit", values(view))
    assert (status, field_errors(body)) == (422, [(None, "seal_style_unchanged")])
    view = await ok(platform, person, view["id"], "submit",
                    values(view) | {"colour": "blue", "size": "22"})
    assert view["ui"]["data"]["svg_url"] == made["svg_url"]
    new_digest = view["ui"]["data"]["content_hash"]
    assert new_digest != digest
    facts = [e["facts"] for e in await history(platform, person, view["id"])]
    assert facts[-1]["restyle_seal"]["previous_hash"] == digest
    svg = await image(platform, made["svg_url"], person, **{"If-None-Match": sealart.etag(digest)})
    assert svg.status == 200
    assert svg.headers["ETag"] == sealart.etag(new_digest)
    assert ET.fromstring(await svg.read()).get("width") == "22mm"  # noqa: S314 - our own SVG
    png = await image(platform, made["png_url"], person)
    assert Image.open(io.BytesIO(await png.read())).getpixel((118, 3)) == (29, 63, 158, 255)

    # Deleted: gone from the list and from its URLs, and nothing left to change.
    status, view = await start(platform, person, "delete_seal")
    assert status == 201, view
    status, body = await step(platform, person, view["id"], "submit", {"seal": seal_id})
    assert (status, field_errors(body)) == (422, [("confirm", "required")])
    view = await ok(platform, person, view["id"], "submit", {"seal": seal_id, "confirm": True})
    assert view["ui"]["data"] == {"seal_id": seal_id, "content_hash": new_digest}
    for url in (made["svg_url"], made["png_url"]):
        gone = await image(platform, url, person)
        assert (gone.status, (await gone.json())["error_id"]) == (404, "seal_not_found")
    listed = await platform.client.get("/api/me/seals", headers=person.auth)
    assert (await listed.json())["seals"] == []
    status, body = await start(platform, person, "change_seal_style")
    assert (status, body["error_id"]) == (409, "no_seal")
    actions = [e["action"] for e in await audit(platform, person)]
    assert actions == ["create_seal", "change_seal_style", "delete_seal"]
    # Room again for one.
    assert (await create(platform, person))["content_hash"] == digest


async def test_an_organisation_seal_shows_its_name_in_force_a_star_inner_text_and_code(
        platform: Platform, pool: asyncpg.Pool) -> None:
    org = await new_organisation(platform)
    iid, view = await to_style(platform, org)
    assert view["state"] == "round_style"
    assert view["ui"]["data"] == {"text": ORG_NAME}
    assert "name" not in values(view)  # the name is never typed
    made = await create(platform, org, inner_text="合同专用章", code="1101 0800 12345")
    facts = (await history(platform, org, made["id"]))[-1]["facts"]["make_seal"]
    assert facts["text"] == ORG_NAME
    assert facts["style"] == {"kind": "round", "size_mm": 42, "colour": "#d00000",
                              "rim_mm": "1.2", "font": "serif_bold",
                              "inner_text": "合同专用章", "code": "1101080012345"}
    assert facts["content_hash"] == sealart.content_hash(
        sealart.Style.from_dict(facts["style"]), ORG_NAME)
    svg = await image(platform, made["svg_url"], org)
    parts = [p.get("class") for p in ET.fromstring(await svg.read()).iter(  # noqa: S314 - our own SVG
        "{http://www.w3.org/2000/svg}path")]
    assert parts.count("name") == len(ORG_NAME)
    assert parts.count("star") == 1
    assert parts.count("inner") == 5
    assert parts.count("code") == 13
    png = await image(platform, made["png_url"], org)
    assert Image.open(io.BytesIO(await png.read())).size == (496, 496)
    # Which agent made it is in the audit log.
    (entry,) = [e for e in await audit(platform, org) if e["action"] == "create_seal"]
    async with pool.acquire() as conn:
        agent = await conn.fetchval("SELECT id FROM agents WHERE organisation_id = $1",
                                    uuid.UUID(org.account_id))
    assert entry["details"]["agent_id"] == str(agent)

    # A second seal of the same organisation, not an identical one.
    await create(platform, org, inner_text="财务专用章", size="40")
    iid, view = await to_style(platform, org)
    status, body = await step(platform, org, iid, "submit", values(view) | {
        "inner_text": "合同专用章", "code": "1101080012345"})
    assert (status, field_errors(body)) == (422, [(None, "seal_duplicate")])

    # Renamed (in force): a restyle shows the new name; the seal kept the old one till then.
    async with pool.acquire() as conn:
        await conn.execute("UPDATE organisations SET name = '新测试科技有限公司'"
                           " WHERE account_id = $1", uuid.UUID(org.account_id))
    listed = await (await platform.client.get("/api/me/seals", headers=org.auth)).json()
    assert [s["text"] for s in listed["seals"]] == [ORG_NAME, ORG_NAME]
    status, view = await start(platform, org, "change_seal_style")
    view = await ok(platform, org, view["id"], "next", {"seal": made["seal_id"]})
    assert values(view)["inner_text"] == "合同专用章"
    view = await ok(platform, org, view["id"], "submit", values(view))
    assert (await history(platform, org, view["id"]))[-1]["facts"]["restyle_seal"][
        "text"] == "新测试科技有限公司"


async def test_bad_styles_are_refused_with_their_field_and_nothing_changes(
        platform: Platform) -> None:
    org = await new_organisation(platform)
    iid, view = await to_style(platform, org)
    form = values(view)
    for change, expected in (
            ({"inner_text": "合" * 300}, ("inner_text", "too_long")),
            ({"font": "comic_sans"}, ("font", "not_choice")),
            ({"size": "20"}, ("size", "not_choice")),
            ({"rim": "3"}, ("rim", "not_choice")),
            ({"colour": "pink"}, ("colour", "seal_colour_invalid")),
            ({"code": "12ab"}, ("code", "seal_code_invalid")),
            ({"code": "1" * 21}, ("code", "seal_code_invalid")),
            ({"inner_text": "合同😀章"}, ("inner_text", "seal_glyph_missing"))):
        status, body = await step(platform, org, iid, "submit", form | change)
        assert (status, field_errors(body)) == (422, [expected]), change
        assert body["error_id"] == "validation_failed"
    resp = await platform.client.get(f"/api/flows/{iid}", headers=org.auth)
    assert (await resp.json())["state"] == "round_style"
    listed = await (await platform.client.get("/api/me/seals", headers=org.auth)).json()
    assert listed["seals"] == []


async def test_only_the_owning_account_sees_a_seal(platform: Platform) -> None:
    org = await new_organisation(platform)
    made = await create(platform, org)
    other, person = await new_organisation(platform), await new_person(platform)
    missing = f"/api/me/seals/{uuid.uuid4()}.svg"
    for url in (made["svg_url"], made["png_url"], missing, "/api/me/seals/nonsense.png"):
        for who in (other, person):
            resp = await image(platform, url, who)
            assert resp.status == 404, url
            assert (await resp.json())["error_id"] == "seal_not_found"
    resp = await image(platform, made["svg_url"], None)
    assert resp.status == 401
    listed = await (await platform.client.get("/api/me/seals", headers=other.auth)).json()
    assert listed["seals"] == []
    # Nor can another account pick it in a flow of its own.
    status, body = await start(platform, other, "change_seal_style")
    assert (status, body["error_id"]) == (409, "no_seal")


async def test_an_organisation_holds_at_most_its_cap_also_when_two_add_at_once(
        platform: Platform) -> None:
    org = await new_organisation(platform)
    seals = platform.app[keys.SERVICES].seals
    now = platform.app[keys.CLOCK].now()
    style = sealart.Style(kind="round", size_mm=42, colour="#d00000", rim_mm="1.2",
                          font="sans")

    def write(n: int) -> Any:
        styled = sealart.Style(**{**style.as_dict(), "code": str(n)})
        return seals.create(seal_id=str(uuid.uuid4()), account_id=org.account_id,
                            kind="round", text=ORG_NAME, style=styled.as_dict(),
                            content_hash=sealart.content_hash(styled, ORG_NAME),
                            cap=ORGANISATION_SEALS, now=now)

    async def run(n: int) -> str | None:
        async with platform.app[keys.POOL].acquire() as conn, conn.transaction():
            try:
                await write(n)(conn)
            except DuplicateKey as exc:
                return str(exc.extra["constraint"])
        return None

    for n in range(ORGANISATION_SEALS - 1):
        assert await run(n) is None
    outcomes = await asyncio.gather(run(100), run(101))
    assert sorted(outcomes, key=str) == [None, "seals_cap"]
    assert len(await seals.list(org.account_id)) == ORGANISATION_SEALS
    status, body = await start(platform, org, "create_seal")
    assert (status, body["error_id"]) == (409, "seal_limit_reached")


async def test_a_name_that_does_not_fit_a_personal_seal_is_refused_at_the_start(
        platform: Platform, pool: asyncpg.Pool) -> None:
    person = await new_person(platform)
    async with pool.acquire() as conn:
        await conn.execute("UPDATE accounts SET display_name = '阿依古丽买买提' WHERE id = $1",
                           uuid.UUID(person.account_id))
    status, body = await start(platform, person, "create_seal")
    assert (status, body["error_id"]) == (409, "seal_name_unfit")


async def test_without_the_fonts_seals_are_a_503_not_a_500(
        platform: Platform, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    person = await new_person(platform)
    made = await create(platform, person)
    monkeypatch.setattr(sealart, "FONT_DIR", tmp_path)
    seal_routes._drawn.cache_clear()
    resp = await image(platform, made["png_url"], person)
    assert resp.status == 503
    assert (await resp.json())["error_id"] == "seal_fonts_missing"
    assert int(resp.headers["Retry-After"]) > 0
    # An unchanged image is still answered from its ETag.
    resp = await image(platform, made["svg_url"], person,
                       **{"If-None-Match": sealart.etag(made["content_hash"])})
    assert resp.status == 304
    status, view = await start(platform, person, "change_seal_style")
    view = await ok(platform, person, view["id"], "next", {"seal": made["seal_id"]})
    status, body = await step(platform, person, view["id"], "submit",
                              values(view) | {"colour": "blue"})
    assert (status, body["error_id"]) == (503, "seal_fonts_missing")


async def test_a_new_drawing_of_the_same_style_is_a_new_etag(
        platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    """Caches holding an image drawn by an older renderer ask again and get the new one."""
    person = await new_person(platform)
    made = await create(platform, person)
    before = sealart.etag(made["content_hash"])
    assert made["content_hash"] in before
    monkeypatch.setattr(sealart, "RENDERER", sealart.RENDERER + 1)
    resp = await image(platform, made["svg_url"], person, **{"If-None-Match": before})
    assert resp.status == 200
    assert resp.headers["ETag"] == sealart.etag(made["content_hash"]) != before
