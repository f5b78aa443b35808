"""The back-office console's pages (no browser): who may see it, a one-time password
shown once and never again, the audit log's filters and pages."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from tests.flows.test_backoffice import admin_sign_in, as_admin, new_admin
from tests.flows.test_phones import new_account, sign_in
from tests.flows.test_verification import Who, new_organisation
from tests.platform import Platform, new_mobile
from tests.web.client.test_pages import hidden, page, post, start
from web.client import console
from web.keys import SERVICES


async def test_the_console_is_for_administrators_only(platform: Platform) -> None:
    status, html = await page(platform, "/admin")
    assert status == 200
    assert 'action="/flows/admin_login/start"' in html
    assert "操作日志" not in html
    account = await new_account(platform, phone=new_mobile())
    assert await sign_in(platform, account["login"]) == 200
    status, html = await page(platform, "/admin")
    assert status == 403
    assert "仅限后台管理员" in html


async def test_the_console_offers_every_flow_for_administrators(platform: Platform) -> None:
    await as_admin(platform)
    status, html = await page(platform, "/admin")
    assert status == 200
    started = set(re.findall(r'action="/flows/([a-z_]+)/start"', html))
    assert started == {"admin_reset_password", "admin_verify_organisation",
                       "admin_create_supervisor"}


async def test_a_one_time_password_is_shown_in_the_answer_once_and_never_again(
        platform: Platform) -> None:
    await as_admin(platform)
    account = await new_account(platform, phone=new_mobile())
    iid, html = await start(platform, "admin_reset_password")
    form = {"csrf": hidden(html, "csrf"), "version": hidden(html, "version"),
            "key": hidden(html, "key"), "login_name": account["login"],
            "reason": "电话核验身份，工单 42"}
    status, where, html = await post(platform, f"/f/{iid}/submit", form)
    assert (status, where) == (200, "")  # the page itself, not a redirect to it
    found = re.search(r'<code class="once-value" id="once-one_time_password">([^<]+)</code>',
                      html)
    assert found, html
    password = found.group(1)
    assert len(password) >= 8
    assert "一次性密码" in html
    # A reload sends the same form again: the step is not taken twice, and the
    # password is not shown again; nor is it on the step's page.
    status, where, html = await post(platform, f"/f/{iid}/submit", form)
    assert (status, where) == (303, f"/f/{iid}")
    _, html = await page(platform, where)
    assert password not in html
    assert "once-value" not in html
    history = await (await platform.client.get(f"/api/flows/{iid}/history")).text()
    assert password not in history


async def test_the_audit_log_filters_and_pages(platform: Platform,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    actor = await as_admin(platform)
    logins = []
    for _ in range(3):
        account = await new_account(platform, phone=new_mobile())
        logins.append(account)
        iid, html = await start(platform, "admin_reset_password")
        status, _, _ = await post(platform, f"/f/{iid}/submit", {
            "csrf": hidden(html, "csrf"), "version": hidden(html, "version"),
            "key": hidden(html, "key"), "login_name": account["login"], "reason": "工单"})
        assert status == 200
    monkeypatch.setattr(console, "PAGE_SIZE", 2)
    status, html = await page(platform, f"/admin?actor={actor}")
    assert status == 200
    assert html.count("<tr>") == 1 + 2  # the heading and a page of two
    older = re.search(r'<a href="([^"]+)" rel="next">', html)
    assert older, html
    status, html = await page(platform, older.group(1).replace("&amp;", "&"))
    assert status == 200
    assert html.count("<tr>") == 1 + 1
    assert 'rel="next"' not in html
    assert "最新记录" in html
    # By target: the first account's entry alone; a link in the table filters by it.
    target = f"account:{logins[0]['id']}"
    status, html = await page(platform, f"/admin?target={target}&action=reset_password")
    assert html.count("<tr>") == 1 + 1
    assert f'href="/admin?target={target.replace(":", "%3A")}#audit"' in html
    status, html = await page(platform, "/admin?action=nothing_like_this")
    assert "没有符合条件的记录。" in html


async def test_the_audit_log_shows_times_in_beijing_time(platform: Platform) -> None:
    actor = await as_admin(platform)
    account = await new_account(platform, phone=new_mobile())
    iid, html = await start(platform, "admin_reset_password")
    await post(platform, f"/f/{iid}/submit", {
        "csrf": hidden(html, "csrf"), "version": hidden(html, "version"),
        "key": hidden(html, "key"), "login_name": account["login"], "reason": "工单"})
    _, html = await page(platform, f"/admin?actor={actor}")
    stamp = re.search(r'<time datetime="([^"]+)" title="北京时间">([^<]+)</time>', html)
    assert stamp, html
    beijing = datetime.fromisoformat(stamp.group(1)).astimezone(timezone(timedelta(hours=8)))
    assert stamp.group(2) == beijing.strftime("%Y-%m-%d %H:%M")


async def test_a_filter_too_long_is_an_error_tied_to_its_field(platform: Platform) -> None:
    await as_admin(platform)
    status, html = await page(platform, "/admin?target=" + "x" * 201)
    assert status == 422
    field = re.search(r'<input[^>]* id="filter-target"[^>]*>', html)
    assert field
    assert 'aria-invalid="true"' in field.group(0)
    assert 'aria-describedby="help-filter-target error-filter-target"' in field.group(0)
    assert 'id="error-filter-target"' in html
    assert 'href="#filter-target"' in html


async def _reset(platform: Platform, login: str) -> None:
    iid, html = await start(platform, "admin_reset_password")
    status, _, html = await post(platform, f"/f/{iid}/submit", {
        "csrf": hidden(html, "csrf"), "version": hidden(html, "version"),
        "key": hidden(html, "key"), "login_name": login, "reason": "工单"})
    assert status == 200, html


async def _verify(platform: Platform, credit_code: str) -> None:
    iid, html = await start(platform, "admin_verify_organisation")
    status, where, html = await post(platform, f"/f/{iid}/submit", {
        "csrf": hidden(html, "csrf"), "version": hidden(html, "version"),
        "key": hidden(html, "key"), "credit_code": credit_code, "reason": "核验营业执照"})
    assert (status, where) == (303, f"/f/{iid}"), html


def _cells(html: str, column: int) -> list[str]:
    """The table's cells of one column (0: time, 1: actor, 2: action, 3: target)."""
    rows = re.findall(r"<tr>(.*?)</tr>", html, re.S)[1:]
    return [re.findall(r"<td>(.*?)</td>", row, re.S)[column] for row in rows]


async def _two_entries(platform: Platform) -> tuple[str, str, dict[str, Any], Who]:
    """An administrator, signed in, who resets a person's password and verifies an
    organisation: the administrator's login name and actor id, the person, the
    organisation."""
    admin = await new_admin(platform)
    await admin_sign_in(platform, admin)
    actor = f"admin:{(await (await platform.client.get('/api/session')).json())['account_id']}"
    person = await new_account(platform, phone=new_mobile())
    org = await new_organisation(platform)
    assert org.credit_code is not None
    await _reset(platform, person["login"])
    await _verify(platform, org.credit_code)
    return admin, actor, person, org


async def test_the_audit_log_names_actors_and_targets_and_keeps_their_ids(
        platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    admin, actor, person, org = await _two_entries(platform)
    # One query names the whole page, however many rows it has.
    accounts = platform.app[SERVICES].accounts
    asked: list[list[str]] = []
    names = accounts.names

    async def counted(ids: list[str]) -> object:
        asked.append(list(ids))
        return await names(ids)

    monkeypatch.setattr(accounts, "names", counted)
    status, html = await page(platform, f"/admin?actor={actor}")
    assert status == 200
    assert len(asked) == 1
    assert sorted(asked[0]) == sorted({actor.removeprefix("admin:"), person["id"],
                                       org.account_id})
    actors, targets = _cells(html, 1), _cells(html, 3)
    assert len(actors) == 2
    for cell in actors:  # the administrator's login name; the raw id in a title and a detail
        assert f'title="{actor}">{admin}</a>' in cell
        assert "管理员" in cell
        assert f"<code>{actor}</code>" in cell
    verified, reset = targets
    assert f'title="organisation:{org.account_id}">测试科技有限公司</a>' in verified
    # A person: the name masked, the login name beside it.
    assert f'title="account:{person["id"]}">赵*（{person["login"]}）</a>' in reset
    assert "赵六" not in html
    # English names the kinds in English.
    _, html = await page(platform, f"/admin?actor={actor}",
                         headers={"Accept-Language": "en"})
    assert f'{person["login"]})</a> <span class="who-kind">Personal account</span>' in html


async def test_the_audit_log_filters_by_login_name_as_by_id(platform: Platform) -> None:
    admin, actor, person, org = await _two_entries(platform)
    _, by_id = await page(platform, f"/admin?actor={actor}")
    # Login names are case-insensitive, as at sign-in.
    _, by_name = await page(platform, f"/admin?actor={admin.upper()}")
    assert _cells(by_name, 1) == _cells(by_id, 1)
    assert len(_cells(by_name, 1)) == 2
    assert f'value="{admin.upper()}"' in by_name  # the filter shows what was typed
    _, html = await page(platform, f"/admin?target={person['login']}")
    assert [c.count(person["id"]) > 0 for c in _cells(html, 3)] == [True]
    # An organisation's login name finds it as an account and as an organisation.
    _, html = await page(platform, f"/admin?target={org.login_name}")
    assert any(f"organisation:{org.account_id}" in c for c in _cells(html, 3))
    _, html = await page(platform, "/admin?actor=nobody-has-this-name")
    assert "没有符合条件的记录。" in html
