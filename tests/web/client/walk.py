"""A browser walking a procedure: each step photographed at both widths, and each page
of the platform checked for labels and errors tied to their inputs."""

from __future__ import annotations

import json
import re
import time
import urllib.request
import uuid
from typing import Any

from playwright.sync_api import BrowserContext, Locator, Page, expect

from flows.pii import MOBILE
from tests.platform import PASSWORD, new_login_name, new_mobile
from tests.web.client.conftest import SHOTS, WIDTHS, Server
from web import keys

# A step that waits for a provider's callback moves on within a few polls.
expect.set_options(timeout=15_000)

# Every input a person can reach has a label (a <label for>, or one around it), and
# every error shown is named by the aria-describedby of an input, which is aria-invalid.
ACCESSIBILITY_PROBLEMS = """() => {
  const problems = [];
  const visible = (e) => !!(e.offsetWidth || e.offsetHeight || e.getClientRects().length);
  for (const e of document.querySelectorAll("input, select, textarea")) {
    if (e.type === "hidden" || !visible(e)) continue;
    const named = (e.labels && e.labels.length) || e.getAttribute("aria-label")
      || e.getAttribute("aria-labelledby");
    if (!named) problems.push("no label: " + (e.id || e.name));
  }
  const described = new Set();
  for (const e of document.querySelectorAll("[aria-describedby]")) {
    for (const id of e.getAttribute("aria-describedby").split(/\\s+/)) {
      if (!document.getElementById(id)) problems.push("describedby names no element: " + id);
      described.add(id);
    }
  }
  for (const e of document.querySelectorAll(".error[id]")) {
    if (!described.has(e.id)) problems.push("error tied to no input: " + e.id);
  }
  for (const e of document.querySelectorAll(".error:not([id])")) {
    problems.push("error without an id: " + e.textContent);
  }
  for (const e of document.querySelectorAll("[aria-invalid=true]")) {
    const ids = (e.getAttribute("aria-describedby") || "").split(/\\s+/);
    if (!ids.some((id) => id.startsWith("error-"))) problems.push("invalid, no error: " + e.id);
  }
  return problems;
}"""


# Chinese text on a page (in its text, its images' alt texts, its labels and placeholders,
# its title), except inside an element marked lang="zh" (the language switch's 中文),
# under the selectors ``skip`` names (records such as the audit log's), or the data
# strings ``allowed`` (a person's name); with full-width punctuation, which is Chinese
# typography too.
CHINESE_LEFT = """([allowed, skip]) => {
  const cjk = /[\\u3000-\\u303f\\u3400-\\u9fff\\uff00-\\uffef]/;
  const visible = (e) => !!(e.offsetWidth || e.offsetHeight || e.getClientRects().length);
  const exempt = (e) => e.closest('[lang^="zh"]') || skip.some((s) => e.closest(s));
  const left = (t) => cjk.test(allowed.reduce((s, a) => s.split(a).join(""), t || ""));
  const found = [];
  if (left(document.title)) found.push("title: " + document.title);
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const e = node.parentElement;
    if (!e || !visible(e) || exempt(e) || e.closest("script, style")) continue;
    if (left(node.textContent)) found.push(node.textContent.trim());
  }
  for (const e of document.querySelectorAll("[alt], [aria-label], [placeholder], [title]")) {
    if (exempt(e)) continue;
    for (const name of ["alt", "aria-label", "placeholder", "title"]) {
      if (left(e.getAttribute(name))) found.push(name + ": " + e.getAttribute(name));
    }
  }
  return found;
}"""


def done_with(page: Page) -> None:
    """Close a page the walk opened beside its own (the sandbox phone), once what its
    last click sent has arrived. Without waiting for the close itself: a plain
    ``page.close()`` while that click's form post was still settling once waited for
    ever (Playwright gives it no timeout)."""
    page.wait_for_load_state()
    page.close(run_before_unload=True)


class Walk:
    """One browser context walking a procedure, photographing each step it reaches."""

    def __init__(self, server: Server, context: BrowserContext, name: str) -> None:
        self.server = server
        self.context = context
        self.page: Page = context.new_page()
        self.page.set_default_timeout(15000)
        self.name = name
        self.count = 0
        self.checked = 0

    def shot(self, what: str) -> None:
        self.check_accessibility()
        self.count += 1
        for width in WIDTHS:
            self.page.set_viewport_size({"width": width, "height": 900})
            path = SHOTS / self.name / f"{self.count:02d}-{what}-{width}.png"
            self.page.screenshot(path=str(path), full_page=True)
        self.page.set_viewport_size({"width": WIDTHS[0], "height": 900})

    def check_accessibility(self) -> None:
        """On the platform's own pages: labels on inputs, errors tied to inputs."""
        if not self.page.url.startswith(self.server.url + "/") or \
                "/sandbox" in self.page.url:
            return
        assert self.page.evaluate(ACCESSIBILITY_PROBLEMS) == [], self.page.url
        self.checked += 1

    def english(self, *allowed: str, skip: tuple[str, ...] = ()) -> None:
        """The page is English: no Chinese left but the data ``allowed``."""
        found = self.page.evaluate(CHINESE_LEFT, [list(allowed), list(skip)])
        assert found == [], (self.page.url, found)

    def goto(self, path: str) -> None:
        self.page.goto(self.server.url + path)

    def instance(self) -> str:
        found = re.search(r"/f/([^/?#]+)", self.page.url)
        assert found, self.page.url
        return found.group(1)

    def sandbox(self, path: str) -> Any:
        """A sandbox JSON page, read with this browser's cookies (the instance's owner)."""
        answer = self.context.request.get(self.server.url + path)
        assert answer.ok, answer.text()
        return answer.json()

    def image_width(self, image: Locator) -> int:
        """The natural width of a visible picture once the browser is done loading it
        (0: it could not be shown)."""
        expect(image).to_be_visible()
        handle = image.element_handle()
        self.page.wait_for_function("(img) => img.complete", arg=handle)
        return int(self.page.evaluate("(img) => img.naturalWidth", handle))

    def captcha(self) -> str:
        """The answer of the picture the page shows: read once the browser has it (the
        answer is recorded when the picture is drawn; read earlier, there may be none,
        or the one a refreshed picture replaced)."""
        self.page.wait_for_function(
            "() => [...document.querySelectorAll('button.captcha img')]"
            ".every((img) => img.complete && img.naturalWidth > 0)")
        found = self.sandbox(f"/sandbox/captchas.json?instance={self.instance()}")["captchas"]
        return str(found[0]["answer"])

    def sms_code(self, phone: str, *, after: int = 0) -> str:
        """The newest code sent to ``phone`` once there are more than ``after`` messages
        (the outbox delivers them in the background)."""
        deadline = time.monotonic() + 20
        while True:
            with urllib.request.urlopen(  # noqa: S310 - our own sandbox over http
                    f"{self.server.url}/sandbox/sms.json?phone={phone}") as answer:
                messages = json.loads(answer.read())["messages"]
            if len(messages) > after:
                return str(re.search(r"验证码为(\d{6})", messages[0]["text"]).group(1))
            assert time.monotonic() < deadline, f"no SMS code for the phone after {after}"
            time.sleep(0.1)

    def sign_in(self, identifier: str, password: str) -> None:
        """Fill the personal sign-in form shown now (the captcha's answer from the
        sandbox) and press its button."""
        self.fill("身份证号码/手机号码/登录名", identifier)
        self.fill("密码", password)
        self.fill("图形验证码", self.captcha())
        self.press("登录")

    def fill(self, label: str, value: str) -> None:
        self.page.get_by_label(label, exact=True).fill(value)

    def press(self, name: str) -> None:
        self.page.get_by_role("button", name=name, exact=True).click()

    def heading(self, text: str) -> None:
        """Wait for the page whose heading is ``text``, and check it (every page a walk
        reaches, photographed or not)."""
        expect(self.page.get_by_role("heading", level=1)).to_have_text(text)
        self.check_accessibility()


def account_with_phone(server: Server) -> tuple[str, str]:
    """A personal account with a phone, written as registration writes one."""
    app = server.app
    assert app is not None
    phone, login = new_mobile(), new_login_name()

    async def create() -> None:
        s = app[keys.SERVICES]
        write = s.accounts.create_person(
            account_id=str(uuid.uuid4()), kind="personal", login_name=login,
            display_name="赵六", password_hash=await s.hasher.hash(PASSWORD),
            id_number_sealed=None, id_number_index=None,
            phone_sealed=s.vault.seal(MOBILE, phone), phone_index=s.vault.index(MOBILE, phone),
            must_change_password=False, now=app[keys.CLOCK].now())
        async with app[keys.POOL].acquire() as conn:
            await write(conn)

    server.run(create())
    return login, phone
