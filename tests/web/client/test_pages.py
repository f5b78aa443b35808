"""The web client's pages over HTTP (no browser): language, CSRF, stale and repeated
forms, errors under their fields, and every public flow's first step."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import pytest

from tests.flows import test_verification as verification
from tests.flows.test_phones import new_account
from tests.flows.test_verification import new_organisation, sign_in
from tests.platform import Platform, new_mobile
from web.client.messages import TEXTS, choose_language
from web.keys import POOL, RUNTIME, SERVICES


def hidden(html: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert found, f"no hidden {name} in the page"
    return found.group(1)


async def page(p: Platform, path: str, **kw: Any) -> tuple[int, str]:
    resp = await p.client.get(path, allow_redirects=False, **kw)
    return resp.status, await resp.text()


async def start(p: Platform, flow: str) -> tuple[str, str]:
    """Start ``flow`` as the start page's button does; its instance id and first page."""
    status, html = await page(p, f"/flows/{flow}/start")
    assert status == 200, html
    resp = await p.client.post(f"/flows/{flow}/start", allow_redirects=False,
                               data={"csrf": hidden(html, "csrf"), "key": hidden(html, "key")})
    assert resp.status == 303, await resp.text()
    location = resp.headers["Location"]
    assert location.startswith("/f/")
    status, html = await page(p, location)
    assert status == 200, html
    return location.removeprefix("/f/"), html


async def post(p: Platform, path: str, data: dict[str, str]) -> tuple[int, str, str]:
    resp = await p.client.post(path, data=data, allow_redirects=False)
    return resp.status, resp.headers.get("Location", ""), await resp.text()


async def history(p: Platform, iid: str) -> list[str]:
    resp = await p.client.get(f"/api/flows/{iid}/history")
    return [e["trigger"] for e in (await resp.json())["events"]]


@pytest.mark.parametrize(("cookie", "accept", "expected"), [
    (None, None, "zh"), (None, "en-GB,en;q=0.9", "en"), (None, "fr, en;q=0.5", "en"),
    (None, "zh-CN,zh;q=0.9,en;q=0.8", "zh"), (None, "de", "zh"), ("en", "zh-CN", "en"),
    ("zh", "en", "zh"), ("xx", "en", "en"), (None, "en;q=0, zh;q=0.1", "zh"),
    (None, "en;q=abc", "zh")])
def test_the_language_is_the_switchs_else_the_browsers_else_chinese(
        cookie: str | None, accept: str | None, expected: str) -> None:
    assert choose_language(cookie, accept) == expected


def test_every_message_has_both_languages() -> None:
    assert all(zh and en for zh, en in TEXTS.values())


async def test_home_is_chinese_by_default_and_english_when_asked(platform: Platform) -> None:
    status, html = await page(platform, "/")
    assert status == 200
    assert '<html lang="zh-CN">' in html
    assert "个人登录" in html
    _, html = await page(platform, "/", headers={"Accept-Language": "en-US,en;q=0.9"})
    assert '<html lang="en">' in html
    assert "Personal sign-in" in html
    resp = await platform.client.get("/lang/en?next=/?tab=legal", allow_redirects=False)
    assert (resp.status, resp.headers["Location"]) == (303, "/?tab=legal")
    _, html = await page(platform, "/?tab=legal")
    assert "Organisation sign-in" in html
    assert "legal_login" in html


async def test_the_switch_goes_back_to_our_own_pages_only(platform: Platform) -> None:
    for elsewhere in ("https://evil.example/", "//evil.example/", "/\\evil.example"):
        resp = await platform.client.get("/lang/zh", params={"next": elsewhere},
                                         allow_redirects=False)
        assert resp.headers["Location"] == "/", elsewhere


async def test_a_start_without_the_csrf_token_is_refused_with_a_page(
        platform: Platform) -> None:
    await page(platform, "/")  # the browser has its csrf cookie
    for data in ({}, {"csrf": "not-the-token"}):
        status, location, html = await post(platform, "/flows/personal_login/start", data)
        assert (status, location) == (403, "")
        assert "text/html" in (await platform.client.get("/")).headers["Content-Type"]
        assert "无法完成请求" in html


async def test_every_public_flow_renders_its_first_step(platform: Platform) -> None:
    flows = platform.app[RUNTIME].flows.flows
    public = [f for f in flows.values() if f.access == "anyone"]
    assert len(public) >= 6
    for flow in public:
        _, html = await start(platform, flow.name)
        label = flow.states[flow.initial].label
        assert label is not None
        assert f"<h1>{label.zh}</h1>" in html, flow.name
        # Every input has its label.
        for input_id in re.findall(r'<(?:input|select|textarea)[^>]* id="([^"]+)"', html):
            assert f'for="{input_id}"' in html, (flow.name, input_id)


def input_type(html: str, name: str) -> str:
    tag = re.search(rf'<input [^>]*name="{name}"[^>]*>', html)
    assert tag, f"no input {name}"
    found = re.search(r'type="([^"]+)"', tag.group(0))
    assert found
    return found.group(1)


async def test_only_a_password_is_typed_unseen(platform: Platform) -> None:
    # An SMS code and a captcha are read off a phone or a picture: typed where they
    # can be seen, never written back into the page all the same.
    _, html = await start(platform, "personal_password_reset")
    assert input_type(html, "sms_code") == "text"
    _, html = await start(platform, "personal_login")
    assert (input_type(html, "password"), input_type(html, "captcha")) == ("password", "text")


async def test_a_refused_step_shows_errors_under_their_fields_and_no_personal_data(
        platform: Platform) -> None:
    iid, html = await start(platform, "personal_password_reset")
    status, _, html = await post(platform, f"/f/{iid}/submit", {
        "csrf": hidden(html, "csrf"), "version": hidden(html, "version"),
        "key": hidden(html, "key"), "mobile": "1380013800x", "sms_code": "123456"})
    assert status == 422
    assert 'aria-describedby="error-mobile"' in html
    assert 'id="error-mobile"' in html
    assert 'aria-invalid="true"' in html
    assert "1380013800x" not in html
    assert "123456" not in html
    assert await history(platform, iid) == ["start"]


async def test_an_old_page_never_steps_and_a_repeated_form_gets_its_first_answer(
        platform: Platform) -> None:
    iid, first = await start(platform, "personal_password_reset")
    form = {"csrf": hidden(first, "csrf"), "version": hidden(first, "version"),
            "key": hidden(first, "key"), "mobile": new_mobile()}
    status, location, _ = await post(platform, f"/f/{iid}/send_code", form)
    assert (status, location) == (303, f"/f/{iid}")
    # The same form again (a double click, a reload): the first answer, no second step.
    status, location, _ = await post(platform, f"/f/{iid}/send_code", form)
    assert (status, location) == (303, f"/f/{iid}")
    assert await history(platform, iid) == ["start", "send_code"]
    # The old page's other button, with a new key: out of date, said so, nothing stepped.
    status, location, _ = await post(platform, f"/f/{iid}/submit",
                                     {**form, "key": "another-key", "sms_code": "123456"})
    assert (status, location) == (303, f"/f/{iid}?stale=1")
    _, html = await page(platform, location)
    assert "页面已过期" in html
    assert await history(platform, iid) == ["start", "send_code"]


async def test_a_deposit_page_takes_its_amount_after_the_banks_credit_stepped_in_place(
        platform: Platform) -> None:
    """The page waiting for the amount was drawn before the bank's credit callback
    stepped the instance (in place, as a provider): the amount typed in it is taken."""
    org = await new_organisation(platform)
    iid = await verification.start(platform, org)
    account = await verification.send_deposit(platform, iid)
    amount = await verification.credited_amount(platform, iid, account)
    _, html = await page(platform, f"/f/{iid}")
    # The page as drawn when the deposit was sent: the version of that step.
    steps = (await (await platform.client.get(f"/api/flows/{iid}/history")).json())["events"]
    waiting = max(e["seq"] for e in steps if e["to"] == "awaiting_deposit"
                  and e["from"] != "awaiting_deposit")
    assert [(e["trigger"], e["from"], e["to"], e["actor"]) for e in steps[waiting:]] == [
        ("deposit_credited", "awaiting_deposit", "awaiting_deposit", "provider:payment")]
    form = {"csrf": hidden(html, "csrf"), "version": str(waiting), "key": "after-credit"}
    status, location, _ = await post(platform, f"/f/{iid}/submit_amount",
                                     {**form, "amount": f"{amount / 100:.2f}"})
    assert (status, location) == (303, f"/f/{iid}")
    assert (await platform.get(iid))["state"] == "verified"


async def test_a_page_drawn_before_the_persons_own_step_stays_out_of_date(
        platform: Platform) -> None:
    """In place, but by the person (a wrong amount from another tab): out of date."""
    org = await new_organisation(platform)
    iid = await verification.start(platform, org)
    account = await verification.send_deposit(platform, iid)
    amount = await verification.credited_amount(platform, iid, account)
    before = (await platform.get(iid))["version"]
    _, html = await page(platform, f"/f/{iid}")
    wrong = verification.wrong_amounts(amount, 1)[0]
    await platform.answer(iid, "submit_amount", {"amount": f"{wrong / 100:.2f}"})
    status, location, _ = await post(platform, f"/f/{iid}/submit_amount", {
        "csrf": hidden(html, "csrf"), "version": str(before), "key": "second-tab",
        "amount": f"{amount / 100:.2f}"})
    assert (status, location) == (303, f"/f/{iid}?stale=1")
    assert (await platform.get(iid))["state"] == "awaiting_deposit"


async def test_someone_elses_instance_shows_nothing(platform: Platform) -> None:
    iid, _ = await start(platform, "personal_login")
    async with platform.another_browser() as other:
        resp = await other.get(f"/f/{iid}")
        assert resp.status == 403
        assert "text/html" in resp.headers["Content-Type"]


async def test_the_personal_center_needs_a_session(platform: Platform) -> None:
    status, _html = await page(platform, "/account")
    assert status == 303


async def test_the_primary_agent_starts_an_agent_flow_from_the_account_page(
        platform: Platform) -> None:
    """The client's start passes the session, as the API's does: the agent flows' first
    action checks that the session's agent is the primary one."""
    org = await new_organisation(platform)
    sign_in(platform, org)
    status, html = await page(platform, "/account")
    assert status == 200
    assert 'action="/flows/add_agent/start"' in html
    _, html = await page(platform, "/flows/add_agent/start")
    assert '<a href="/account">返回个人中心</a>' in html
    iid, html = await start(platform, "add_agent")
    assert "填写新经办人信息" in html
    assert (await platform.get(iid))["state"] == "agent_info"


def test_every_datum_flows_yaml_shows_has_a_caption(platform: Platform) -> None:
    """A generic client captions shown data from show_labels; none is left bare."""
    for flow in platform.app[RUNTIME].flows.flows.values():
        for state in flow.states.values():
            captions = dict(state.show_labels)
            assert [name for name, _ in state.show if name not in captions] == [], (
                flow.name, state.name)


def test_every_catalogue_text_is_used_by_a_page() -> None:
    """The catalogue holds the pages' texts, and only those (tab_*, *_intro and the
    like are looked up by a name the templates build)."""
    root = Path(__file__).parents[3] / "web" / "client"
    source = "".join(p.read_text(encoding="utf-8") for p in root.rglob("*")
                     if p.suffix in (".html", ".py") and p.name != "messages.py")
    built = ("tab_", "_intro", "register_", "forgot_", "kind_")
    assert [key for key in TEXTS if f"'{key}'" not in source and f'"{key}"' not in source
            and not any(part in key for part in built)] == []


async def _started(p: Platform, flow: str) -> int:
    async with p.app[POOL].acquire() as conn:
        return int(await conn.fetchval(
            "SELECT count(*) FROM flow_instances WHERE flow = $1", flow))


async def test_a_finished_reset_goes_on_to_the_sign_in_form_started_once(
        platform: Platform) -> None:
    person = await new_account(platform, phone=new_mobile())
    iid = (await platform.start("personal_password_reset"))["id"]
    await platform.ok(iid, "send_code", {"mobile": person["phone"]})
    code = await platform.sms_code(person["phone"])
    await platform.ok(iid, "submit", {"mobile": person["phone"], "sms_code": code})
    new = "Another-Secret-9"
    await platform.ok(iid, "submit", {"password": new, "password_confirm": new})
    _, html = await page(platform, f"/f/{iid}")
    target = f"/flows/personal_login/start?from={iid}"
    # After six seconds (no script needed), and the button beside the countdown.
    assert f'<meta http-equiv="refresh" content="6;url={target}">' in html
    assert f'href="{target}"' in html
    before = await _started(platform, "personal_login")
    legal_before = await _started(platform, "legal_login")
    resp = await platform.client.get(target, allow_redirects=False)
    assert resp.status == 303
    sign_in = resp.headers["Location"]
    assert sign_in.startswith("/f/")
    # The sign-in form itself, ready to type in.
    status, html = await page(platform, sign_in)
    assert status == 200
    assert "<h1>个人登录</h1>" in html
    assert 'id="field-identifier"' in html
    assert 'id="field-password"' in html
    # The captcha's picture is in the page; its button asks the address for the next.
    assert 'src="data:image/jpeg;base64,' in html
    assert f'data-src="/api/flows/{sign_in.removeprefix("/f/")}/captcha"' in html
    # A reload, a prefetch, the button after the countdown: the same instance.
    for _ in range(2):
        resp = await platform.client.get(target, allow_redirects=False)
        assert (resp.status, resp.headers["Location"]) == (303, sign_in)
    assert await _started(platform, "personal_login") == before + 1
    # Another browser (a crawler, a shared link) starts nothing: the start page's button.
    async with platform.another_browser() as other:
        resp = await other.get(target, allow_redirects=False)
        assert resp.status == 200
        assert 'action="/flows/personal_login/start"' in await resp.text()
    # Nor does a flow the finished step does not offer, an unfinished instance, or
    # anything that is no instance.
    unfinished = (await platform.start("personal_password_reset"))["id"]
    for elsewhere in (f"/flows/legal_login/start?from={iid}",
                      f"/flows/personal_login/start?from={unfinished}",
                      "/flows/personal_login/start?from=not-an-instance",
                      "/flows/personal_login/start?from=" + "9" * 65):
        status, html = await page(platform, elsewhere)
        assert status == 200, elsewhere
        assert 'action="/flows/' in html
    assert await _started(platform, "personal_login") == before + 1
    assert await _started(platform, "legal_login") == legal_before


async def test_a_browser_loading_a_captcha_step_ahead_of_time_draws_none(
        platform: Platform) -> None:
    """A prefetch or prerender of a step that shows a captcha is refused before it
    draws one: the picture the person is looking at keeps working."""
    iid, _ = await start(platform, "personal_login")
    resp = await platform.client.get(f"/f/{iid}")
    assert resp.status == 200
    answers = await platform.client.get("/sandbox/captchas.json", params={"instance": iid})
    drawn = [c["answer"] for c in (await answers.json())["captchas"]]
    shown = drawn[0]  # the newest: the page's
    for headers in ({"Sec-Purpose": "prefetch"}, {"Sec-Purpose": "prefetch;prerender"},
                    {"Purpose": "prefetch"}):
        resp = await platform.client.get(f"/f/{iid}", headers=headers)
        assert resp.status == 503, headers
        assert resp.headers["Cache-Control"] == "no-store"
        assert "data:image" not in await resp.text()
    answers = await platform.client.get("/sandbox/captchas.json", params={"instance": iid})
    assert [c["answer"] for c in (await answers.json())["captchas"]] == drawn
    assert await platform.app[SERVICES].captchas.check(iid, str(shown)) is None
    # A step with no captcha loads ahead of time as any page does.
    other, _ = await start(platform, "personal_password_reset")
    resp = await platform.client.get(f"/f/{other}", headers={"Sec-Purpose": "prefetch"})
    assert resp.status == 200


async def test_the_sign_in_page_holds_its_captcha_and_its_answer_is_the_sandboxs(
        platform: Platform) -> None:
    """One request for the form and its picture: the picture a data: URL the page's
    policy lets in, the one whose answer the sandbox shows; past the limit of pictures,
    the address, which says why."""
    iid, _ = await start(platform, "personal_login")
    resp = await platform.client.get(f"/f/{iid}")
    html = await resp.text()
    assert "img-src 'self' data:" in resp.headers["Content-Security-Policy"]
    drawn = html.split('src="data:image/jpeg;base64,', 1)[1].split('"', 1)[0]
    assert base64.b64decode(drawn).startswith(b"\xff\xd8\xff")
    answers = await platform.client.get("/sandbox/captchas.json", params={"instance": iid})
    assert len((await answers.json())["captchas"]) >= 1
    # Pictures of this instance to the limit (20 in flows.yaml): the page still opens,
    # with the address in the picture's place, and no data: in its policy.
    for _ in range(20):
        await platform.client.get(f"/api/flows/{iid}/captcha")
    resp = await platform.client.get(f"/f/{iid}")
    html = await resp.text()
    assert resp.status == 200
    assert 'src="data:' not in html
    assert f'<img src="/api/flows/{iid}/captcha"' in html
    assert "data:" not in resp.headers["Content-Security-Policy"]
