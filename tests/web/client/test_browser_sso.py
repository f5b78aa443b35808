"""Single sign-on in Chromium: the example business system sends a person to the
platform, who signs in on the client's page and comes back; then enters it again from
the service hall without signing in. And the same in English, with the newer pages: the
account page, a procedure of the personal center, the back-office console."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from playwright.sync_api import Browser, BrowserContext, Request, expect

from examples.business_system import Config, create_app
from tests.examples.test_business_system import SYSTEMS
from tests.platform import PASSWORD
from tests.web.client.conftest import WIDTHS, Server, free_port, serving
from tests.web.client.test_browser_backoffice import administrator
from tests.web.client.walk import Walk, account_with_phone
from web import keys
from web.oidc import OIDC, example

pytestmark = pytest.mark.browser

class World:
    def __init__(self, server: Server, rp_url: str) -> None:
        self.server = server
        self.rp_url = rp_url


@pytest.fixture(scope="module")
def world(database_url: str, redis_prefix: str,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """The platform with the example system in its systems.yaml, and the example served
    on its own port from the same thread (its secret made as `flowctl serve` makes it)."""
    here: Path = tmp_path_factory.mktemp("sso")
    rp_port = free_port()
    systems = here / "systems.yaml"
    systems.write_text(SYSTEMS.format(port=rp_port), encoding="utf-8")
    with serving(database_url, redis_prefix, systems_file=str(systems)) as srv:
        app = srv.app
        assert app is not None
        rp_url = f"http://127.0.0.1:{rp_port}"

        async def up() -> web.AppRunner:
            secret = await example.ensure_secret(app[OIDC].store, app[keys.SERVICES].vault,
                                                 str(here / "data"), app[keys.CLOCK].now())
            rp = create_app(Config(issuer=srv.url, base_url=rp_url,
                                   client_secret=secret.read_text().strip()))
            runner = web.AppRunner(rp)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", rp_port).start()
            return runner

        runner = srv.run(up())
        try:
            yield World(srv, rp_url)
        finally:
            srv.run(runner.cleanup())


def test_a_person_signs_in_for_a_system_then_enters_it_again_from_the_hall(
        world: World, context: BrowserContext) -> None:
    login, _ = account_with_phone(world.server)
    w = Walk(world.server, context, "sso")
    w.page.goto(world.rp_url + "/")
    expect(w.page.get_by_text("Not signed in")).to_be_visible()
    w.page.get_by_role("link", name=re.compile("通过统一身份认证平台登录")).click()

    # The platform's sign-in page, naming the system the person came from.
    expect(w.page).to_have_url(re.compile(r"/login\?authorize="))
    expect(w.page.get_by_role("status")).to_have_text("登录后将进入：示例业务系统")
    w.shot("sign-in-for-system")
    w.page.get_by_role("button", name="登录", exact=True).click()
    w.heading("个人登录")
    w.fill("身份证号码/手机号码/登录名", login)
    w.fill("密码", PASSWORD)
    w.fill("图形验证码", w.captcha())
    w.shot("credentials")
    w.press("登录")

    # Back at the system, which shows who came in.
    expect(w.page).to_have_url(world.rp_url + "/")
    expect(w.page.locator("#name")).to_have_text("赵六")
    expect(w.page.get_by_role("cell", name="personal")).to_be_visible()
    w.shot("system-shows-the-person")

    # The system forgets its session; from the hall it is entered again, with no
    # sign-in page on the way (single sign-on).
    context.clear_cookies(name="example_rp")
    w.goto("/")
    hall = w.page.get_by_role("region", name="服务大厅")
    system = hall.get_by_role("link", name="示例业务系统")
    expect(system).to_be_visible()
    icon = system.locator("img")
    assert w.image_width(icon) > 0
    w.shot("hall")
    visited: list[str] = []
    w.page.on("request", lambda r: visited.append(r.url) if _navigation(r) else None)
    system.click()
    expect(w.page).to_have_url(world.rp_url + "/")
    expect(w.page.locator("#name")).to_have_text("赵六")
    assert [u.split("?")[0] for u in visited] == [
        f"{world.rp_url}/login", f"{world.server.url}/authorize", f"{world.rp_url}/callback",
        f"{world.rp_url}/"]
    w.shot("entered-again")


def test_an_english_browser_signs_in_for_a_system_and_uses_its_account_in_english(
        world: World, browser: Browser) -> None:
    """Accept-Language en: every text of the platform's pages is English, but the data."""
    login, _ = account_with_phone(world.server)
    context = browser.new_context(locale="en-GB",
                                  viewport={"width": WIDTHS[0], "height": 900})
    context.set_default_timeout(15000)
    try:
        w = Walk(world.server, context, "english")
        w.page.goto(world.rp_url + "/")
        w.page.get_by_role("link", name=re.compile("通过统一身份认证平台登录")).click()
        expect(w.page.get_by_role("status")).to_have_text(
            "After signing in you go on to: Example business system")
        w.english()
        w.shot("sign-in-for-system")
        w.page.get_by_role("button", name="Sign in", exact=True).click()
        w.heading("Sign in")
        w.english()
        w.fill("ID number, mobile number or login name", login)
        w.fill("Password", "Wrong-Horse-9")
        w.fill("Characters in the picture", w.captcha())
        w.press("Sign in")
        expect(w.page.get_by_role("alert")).to_be_visible()
        w.english()
        w.shot("sign-in-refused")
        w.fill("ID number, mobile number or login name", login)
        w.fill("Password", PASSWORD)
        w.fill("Characters in the picture", w.captcha())
        w.press("Sign in")
        expect(w.page).to_have_url(world.rp_url + "/")

        # The platform's home with its hall, the account page, a procedure of it.
        w.goto("/")
        expect(w.page.get_by_role("region", name="Service hall")).to_be_visible()
        w.english("赵六")
        w.shot("home")
        w.page.get_by_role("link", name="My account", exact=True).click()
        w.heading("My account")
        w.english("赵六")
        w.shot("account")
        w.press("Change the password")
        w.heading("Change your password")
        w.english("赵六")
        w.fill("Current password", "Wrong-Horse-9")
        w.press("Confirm")
        expect(w.page.locator(".error-summary")).to_be_visible()
        w.english("赵六")
        w.shot("password-refused")
        w.fill("Current password", PASSWORD)
        w.fill("New password", "Another-Horse-8")
        w.fill("Repeat the new password", "Another-Horse-8")
        w.press("Confirm")
        w.heading("Password changed; you were signed out everywhere else")
        w.english("赵六")
        w.shot("password-changed")

        # The console, for an administrator: its log's records are data, not its texts.
        context.add_cookies([{"name": "session", "url": world.server.url,
                              "value": administrator(world.server, session=True)}])
        w.goto("/admin")
        w.heading("Back office")
        w.english("运营小王", skip=("table.audit tbody",))
        w.shot("console")
        w.press("Create a supervisor account (back office)")
        w.english("运营小王")
        w.shot("create-supervisor")
    finally:
        context.close()


def _navigation(request: Request) -> bool:
    return request.is_navigation_request()
