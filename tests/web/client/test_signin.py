"""Signing in for a business system through the client's pages (no browser): /login
remembers the provider's waiting request, the sign-in step goes on to it, and nothing
sends a browser anywhere but to /authorize/resume of a request it made itself."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.flows.test_phones import new_account, second_browser
from tests.platform import PASSWORD, Platform, new_mobile
from tests.web.client.test_pages import hidden, page, post, start
from tests.web.oidc.conftest import location, new_secret
from tests.web.oidc.test_provider import RelyingParty, browse, query_of


@pytest.fixture
async def rp(oidc: Platform) -> AsyncIterator[RelyingParty]:
    party = RelyingParty(oidc, "portal", await new_secret(oidc, "portal"))
    try:
        yield party
    finally:
        await party.aclose()


async def waiting_request(p: Platform, rp: RelyingParty) -> str:
    """A browser without a session at /authorize: the id of the request it waits with."""
    response = await browse(p, rp.authorization_url())
    assert response.status == 302
    return query_of(location(response))["authorize"]


async def sign_in_with_the_form(p: Platform, login: str) -> tuple[int, str]:
    """personal_login through the client's pages; the status and Location of the step."""
    iid, html = await start(p, "personal_login")
    captcha = await p.captcha(iid)
    status, where, _ = await post(p, f"/f/{iid}/submit", {
        "csrf": hidden(html, "csrf"), "version": hidden(html, "version"),
        "key": hidden(html, "key"), "identifier": login, "password": PASSWORD,
        "captcha": captcha})
    return status, where


async def test_login_names_the_system_and_the_sign_in_goes_on_to_its_request(
        oidc: Platform, rp: RelyingParty) -> None:
    request_id = await waiting_request(oidc, rp)
    response = await oidc.client.get(f"/login?authorize={request_id}")
    status, html = response.status, await response.text()
    assert status == 200
    [set_cookie] = [c for c in response.headers.getall("Set-Cookie")
                    if c.startswith("authorize=")]
    assert {"httponly", "samesite=lax", "max-age=900"} <= {
        part.strip().lower() for part in set_cookie.split(";")}
    assert "登录后将进入：政务门户" in html
    # The tabs keep the request: the organisation tab is the same page.
    assert f'href="/login?authorize={request_id}&amp;tab=legal"' in html
    cookie = oidc.client.session.cookie_jar.filter_cookies(oidc.client.make_url("/"))
    assert cookie["authorize"].value == request_id

    account = await new_account(oidc, phone=new_mobile())
    assert await sign_in_with_the_form(oidc, account["login"]) == (303, "/login/continue")
    status, html = await page(oidc, "/login/continue")
    assert status == 200
    resume = f"/authorize/resume?id={request_id}"
    assert f'<meta http-equiv="refresh" content="0;url={resume}">' in html
    assert "正在进入业务系统" in html
    # Used once: the cookie is gone, a second sign-in goes to its own page.
    jar = oidc.client.session.cookie_jar.filter_cookies(oidc.client.make_url("/"))
    assert "authorize" not in jar
    response = await oidc.client.get(resume, allow_redirects=False)
    assert response.status == 302
    assert location(response).startswith(rp.client.redirect_uri + "?code=")
    status, where = await sign_in_with_the_form(oidc, account["login"])
    assert status == 303
    assert where.startswith("/f/")


async def test_a_request_of_another_browser_or_none_at_all_is_refused_with_a_page(
        oidc: Platform, rp: RelyingParty) -> None:
    request_id = await waiting_request(oidc, rp)
    async with second_browser(oidc) as other:
        status, html = await page(other, f"/login?authorize={request_id}")
        assert status == 403
        assert "此登录请求属于另一个浏览器" in html
        assert "authorize" not in other.client.session.cookie_jar.filter_cookies(
            other.client.make_url("/"))
    status, html = await page(oidc, "/login?authorize=" + "x" * 32)
    assert status == 404
    assert "登录请求不存在或已过期" in html


@pytest.mark.parametrize("given", ["", "https://evil.example/", "//evil.example",
                                   "../../sandbox", "a" * 200])
async def test_login_with_anything_but_a_request_id_goes_home(
        oidc: Platform, given: str) -> None:
    response = await oidc.client.get("/login", params={"authorize": given},
                                     allow_redirects=False)
    assert (response.status, location(response)) == (303, "/")


async def test_a_forged_cookie_sends_the_signed_in_browser_nowhere_else(
        oidc: Platform) -> None:
    account = await new_account(oidc, phone=new_mobile())
    url = oidc.client.make_url("/")
    for forged in ("https://evil.example/", "//evil.example", "a" * 200):
        oidc.client.session.cookie_jar.update_cookies({"authorize": forged}, url)
        status, where = await sign_in_with_the_form(oidc, account["login"])
        assert status == 303
        assert where.startswith("/f/"), forged
        response = await oidc.client.get("/login/continue", allow_redirects=False)
        assert (response.status, location(response)) == (303, "/")
    # An id of the right shape that is no waiting request: home, and the cookie dropped.
    oidc.client.session.cookie_jar.update_cookies({"authorize": "y" * 32}, url)
    response = await oidc.client.get("/login/continue", allow_redirects=False)
    assert (response.status, location(response)) == (303, "/")
    assert "authorize" not in oidc.client.session.cookie_jar.filter_cookies(url)


async def test_the_home_page_shows_the_hall_with_each_systems_icon_allowed(
        oidc: Platform) -> None:
    account = await new_account(oidc, phone=new_mobile())
    status, _ = await sign_in_with_the_form(oidc, account["login"])
    assert status == 303
    response = await oidc.client.get("/")
    html = await response.text()
    assert "服务大厅" in html
    assert '<img src="https://portal.example/icon.svg" alt=""' in html
    assert 'href="https://portal.example/login?iss=' in html
    assert "企业服务" not in html  # a system for organisations only
    policy = response.headers["Content-Security-Policy"]
    assert "img-src 'self' https://portal.example" in policy
    assert "frame-ancestors 'none'" in policy
