"""Procedures walked in Chromium through the reference web client, with the sandbox.

Each step is photographed at 1280 and 360 px wide under test-output/screenshots/.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Browser, BrowserContext, expect

from tests.platform import PASSWORD, new_id_number, new_login_name, new_mobile
from tests.web.client.conftest import WIDTHS, Server
from tests.web.client.walk import Walk, account_with_phone, done_with

pytestmark = pytest.mark.browser


def registered_pair(server: Server) -> tuple[str, str]:
    """A name and ID number the sandbox's real-name registry holds as a pair."""
    return "王小明", new_id_number()


def test_a_person_registers_signs_in_and_makes_a_seal_in_the_browser(
        server: Server, context: BrowserContext) -> None:
    w = Walk(server, context, "personal")
    name, id_number = registered_pair(server)
    login, phone = new_login_name(), new_mobile()

    w.goto("/")
    expect(w.page.get_by_role("link", name="个人登录")).to_be_visible()
    w.shot("home")
    w.page.get_by_role("link", name="个人账号注册").click()
    w.press("开始办理")
    w.heading("填写基本信息")
    w.shot("basic-info")
    # Nothing filled in: every required field says so, under itself.
    w.press("下一步")
    expect(w.page.locator("#error-name")).to_have_text("此项为必填项")
    assert w.page.get_by_label("姓名").get_attribute("aria-describedby") == "error-name"
    w.shot("basic-info-errors")
    w.fill("姓名", name)
    w.fill("身份证号码", id_number)
    w.page.get_by_label("我已阅读并同意《用户服务协议》").check()
    w.press("下一步")

    w.heading("实名认证：请用支付宝或微信扫码进行人脸识别")
    qr = w.page.get_by_role("img", name="人脸识别二维码")
    expect(qr).to_be_visible()
    w.shot("face")
    # The sandbox phone page (what the QR code opens) passes the face scan; the waiting
    # page moves on by itself.
    phone_page = context.new_page()
    phone_page.goto(w.page.get_by_role("link", name="无法扫码？在手机上打开此链接")
                    .get_attribute("href"))
    phone_page.get_by_role("button", name=re.compile("^通过")).click()
    done_with(phone_page)
    w.heading("设置账号信息")
    w.shot("account-info")

    w.fill("登录名", login)
    w.fill("密码", PASSWORD)
    w.fill("确认密码", PASSWORD)
    w.fill("手机号码", phone)
    # With scripts on, the code is sent without leaving the page: what is typed stays,
    # and the button waits out the resend interval the flow's limit sets.
    w.press("获取验证码")
    expect(w.page.locator("#status-mobile")).to_have_text("获取验证码：成功")
    expect(w.page.get_by_role("button", name=re.compile(r"获取验证码 \(\d+\)"))).to_be_disabled()
    expect(w.page.get_by_label("登录名", exact=True)).to_have_value(login)
    w.shot("code-sent")
    w.fill("短信验证码", w.sms_code(phone))
    w.press("注册")
    w.heading("注册成功")
    shown = w.page.locator("dl.shown")
    expect(shown).to_contain_text(login)
    expect(shown).to_contain_text(id_number[:3] + "*")
    assert id_number not in w.page.content()
    assert phone not in w.page.content()
    w.shot("registered")

    # "Sign in now" starts the sign-in; the captcha's answer comes from the sandbox.
    w.page.get_by_role("link", name="立即登录").click()
    w.heading("个人登录")
    expect(w.page.get_by_role("img", name="图形验证码图片")).to_be_visible()
    w.shot("sign-in")
    w.sign_in(phone, "Wrong-Horse-7")
    expect(w.page.get_by_role("alert")).to_be_visible()
    w.shot("sign-in-refused")
    with w.page.expect_response(re.compile(r"/captcha")):  # a new picture, the old dead
        w.page.get_by_role("button", name="看不清？换一张").click()
    w.sign_in(phone, PASSWORD)
    w.heading("登录成功")
    w.shot("signed-in")
    w.page.get_by_role("link", name="进入个人中心").click()

    w.heading("个人中心")
    expect(w.page.locator("dl.shown").first).to_contain_text(login)
    expect(w.page.get_by_text("还没有电子印章。")).to_be_visible()
    w.shot("account")
    w.press("创建电子印章")
    w.heading("创建电子印章")
    w.shot("seal-overview")
    w.press("下一步")
    w.heading("方形印章样式")
    w.shot("seal-style")
    w.page.get_by_label("思源黑体", exact=True).check()
    w.press("创建印章")
    w.heading("印章已创建")
    w.shot("seal-made")
    w.page.get_by_role("link", name="返回个人中心").click()
    preview = w.page.get_by_role("img", name=re.compile("印章预览"))
    assert w.image_width(preview) > 0
    w.shot("account-with-seal")

    # English by the switch; signing out ends the session.
    w.page.get_by_role("link", name="English").click()
    w.heading("My account")
    w.shot("account-english")
    w.press("Sign out")
    expect(w.page.get_by_role("link", name="Personal sign-in")).to_be_visible()


def test_a_password_reset_works_with_javascript_off(server: Server,
                                                    browser: Browser) -> None:
    login, phone = account_with_phone(server)
    context = browser.new_context(java_script_enabled=False, locale="zh-CN",
                                  viewport={"width": WIDTHS[0], "height": 900})
    try:
        w = Walk(server, context, "password-reset-no-js")
        w.goto("/")
        w.page.get_by_role("link", name="个人账户忘记密码").click()
        w.press("开始办理")
        w.heading("验证手机号码")
        w.shot("verify-phone")
        w.fill("手机号码", phone)
        w.press("获取验证码")
        code = w.sms_code(phone)
        w.shot("code-sent")
        # The same page again, from the back button: the stale form is refused clearly.
        w.fill("手机号码", phone)
        w.fill("短信验证码", code)
        w.press("下一步")
        w.heading("设置新密码")
        w.shot("new-password")
        w.page.go_back()
        w.page.reload()
        w.heading("设置新密码")
        new = "Another-Horse-8"
        w.fill("新密码", new)
        w.fill("确认新密码", "Not-The-Same-9")
        w.press("确定")
        expect(w.page.locator(".error-summary")).to_be_visible()
        w.shot("passwords-differ")
        w.fill("新密码", new)
        w.fill("确认新密码", new)
        w.press("确定")
        w.heading("密码已重置，6秒后自动跳转登录页")
        refresh = w.page.locator("meta[http-equiv=refresh]")
        assert refresh.get_attribute("content").startswith("6;url=/flows/personal_login/start")
        w.shot("done")
        # With the new password, sign-in works (the captcha image works without scripts).
        w.page.get_by_role("link", name="立即前往登录").click()
        w.heading("个人登录")
        w.sign_in(login, new)
        w.heading("登录成功")
        w.shot("signed-in")
    finally:
        context.close()
