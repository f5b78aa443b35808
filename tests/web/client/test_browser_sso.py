"""Single sign-on in Chromium: the example business system sends a person to the
platform, who signs in on the client's page and comes back; then enters it again from
the service hall without signing in."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from playwright.sync_api import BrowserContext, Request, expect

from examples.business_system import Config, create_app
from tests.examples.test_business_system import SYSTEMS
from tests.platform import PASSWORD
from tests.web.client.conftest import Server, free_port, serving
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
    assert w.page.evaluate("(img) => img.naturalWidth", icon.element_handle()) > 0
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


def _navigation(request: Request) -> bool:
    return request.is_navigation_request()
