"""The organisation's procedures walked in Chromium through the sandbox: registration,
sign-in with the agent's SMS code, verification by micro-deposit (the amount read from
the sandbox bank statement) and by the legal representative's face (the sandbox phone
page), the organisation's password reset, and its personal center."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, expect

from tests.flows.test_verification import REP_NAME, Who, new_account_number, new_organisation
from tests.platform import (
    PASSWORD,
    Platform,
    new_credit_code,
    new_id_number,
    new_login_name,
    new_mobile,
)
from tests.web.client.conftest import WIDTHS, Server
from tests.web.client.walk import Walk, done_with

pytestmark = pytest.mark.browser


def organisation(server: Server) -> Who:
    """An unverified organisation whose primary agent is its legal representative."""
    app = server.app
    assert app is not None
    found: Who = server.run(new_organisation(Platform(None, app)))  # type: ignore[arg-type]
    return found


def signed_in(w: Walk, who: Who) -> None:
    """The browser holds ``who``'s session, as the agent check's step would set it."""
    w.context.add_cookies([{"name": "session", "value": who.token, "url": w.server.url}])


def statement(w: Walk, account: str) -> list[dict[str, Any]]:
    """The sandbox bank's credits to ``account``, once there is one."""
    deadline = time.monotonic() + 20
    while True:
        credits: list[dict[str, Any]] = w.sandbox(f"/sandbox/bank/{account}.json")["credits"]
        if credits:
            return credits
        assert time.monotonic() < deadline, "no credit on the statement"
        time.sleep(0.1)


def test_an_organisation_registers_signs_in_with_its_agent_and_verifies_by_deposit(
        server: Server, context: BrowserContext) -> None:
    w = Walk(server, context, "legal")
    credit, rep_id = new_credit_code(), new_id_number()
    login, phone = new_login_name(), new_mobile()

    w.goto("/?tab=legal")
    w.shot("home-legal-tab")
    w.page.get_by_role("link", name="法人账号注册").click()
    w.press("开始办理")
    w.heading("填写单位基本信息")
    w.fill("单位名称", "示范科技有限公司")
    w.fill("统一社会信用代码", credit)
    w.fill("法定代表人姓名", REP_NAME)
    w.fill("法定代表人身份证号码", rep_id)
    w.fill("图形验证码", w.captcha())
    w.page.get_by_label("我已阅读并同意《用户服务协议》").check()
    w.shot("basic-info")
    w.press("下一步")

    w.heading("选择申请人类型")
    w.page.get_by_label("法人本人", exact=True).check()
    w.shot("applicant")
    w.press("下一步")

    w.heading("设置账号信息")
    # The legal representative applies in person: name and ID are theirs, locked.
    expect(w.page.get_by_label("申请人姓名")).to_have_value(REP_NAME)
    expect(w.page.get_by_label("申请人姓名")).not_to_be_editable()
    w.fill("申请人手机号码", phone)
    w.press("获取验证码")
    expect(w.page.locator("#status-mobile")).to_have_text("获取验证码：成功")
    w.fill("短信验证码", w.sms_code(phone))
    w.fill("登录名", login)
    w.fill("密码", PASSWORD)
    w.fill("确认密码", PASSWORD)
    w.shot("account-info")
    w.press("注册")
    w.heading("注册成功")
    expect(w.page.locator("dl.shown")).to_contain_text(login)
    expect(w.page.locator("dl.shown")).to_contain_text(credit[-4:])
    assert credit not in w.page.content()
    assert phone not in w.page.content()
    w.shot("registered")

    # Sign in: the organisation's name and password, then an agent's SMS code.
    w.page.get_by_role("link", name="立即登录").click()
    w.heading("法人登录")
    w.fill("登录名", login)
    w.fill("密码", PASSWORD)
    w.fill("图形验证码", w.captcha())
    w.shot("sign-in")
    w.press("登录")
    w.heading("经办人验证")
    agent = w.page.get_by_label(re.compile(f"^{REP_NAME}"))
    expect(w.page.locator("fieldset")).to_contain_text(phone[-4:])
    assert phone not in w.page.content()
    agent.check()
    w.shot("agent-check")
    w.press("获取验证码")
    w.heading("经办人验证")
    code = w.sms_code(phone, after=1)
    w.page.get_by_label(re.compile(f"^{REP_NAME}")).check()
    w.fill("短信验证码", code)
    w.press("登录")
    w.heading("登录成功")
    w.shot("signed-in")
    w.heading("个人中心")  # it goes there on its own after two seconds

    # The personal center: unverified, the applicant as the primary agent.
    expect(w.page.locator(".status-unverified")).to_have_text("未认证")
    primary = w.page.locator("tr.primary-agent")
    expect(primary).to_contain_text(REP_NAME)
    expect(primary).to_contain_text("主经办人")
    w.shot("account-unverified")
    w.press("企业账号实名认证")

    w.heading("选择认证方式")
    w.page.get_by_label("对公账户打款认证").check()
    w.shot("choose-method")
    w.press("下一步")
    w.heading("填写对公账户信息")
    account = new_account_number()
    w.fill("对公账号", account)
    branch = w.page.get_by_label("开户网点", exact=True)
    branch.press_sequentially("工商 北京")
    # The suggestions come as one types; the branch is picked from them.
    options = w.page.locator("datalist option")
    expect(options.first).to_be_attached()
    picked = options.first.get_attribute("value")
    assert picked
    branch.fill(picked)
    w.shot("account-details")
    w.press("确认打款")
    w.heading("已向对公账户打款，请填写收到的金额")
    w.shot("awaiting-deposit")
    fen = int(statement(w, account)[0]["amount_fen"])
    # The bank's credit reaches the flow too; the waiting page shows it on its own.
    expect(w.page.locator("dt:text-is('是否已到账') + dd")).to_have_text("是")
    w.shot("credited")
    wrong = 1 if fen != 1 else 2
    w.fill("收到的金额（元）", f"0.{wrong:02d}")
    w.press("提交")
    expect(w.page.locator("#error-amount")).to_contain_text("金额不正确")
    w.shot("wrong-amount")
    w.fill("收到的金额（元）", f"{fen // 100}.{fen % 100:02d}")
    w.press("提交")
    w.heading("企业已认证")
    w.shot("verified")
    w.page.get_by_role("link", name="返回个人中心").click()
    expect(w.page.locator(".status-verified")).to_have_text("已认证")
    w.shot("account-verified")


def test_a_bank_branch_is_found_by_name_with_javascript_off(server: Server,
                                                            browser: Browser) -> None:
    context = browser.new_context(java_script_enabled=False, locale="zh-CN",
                                  viewport={"width": WIDTHS[0], "height": 900})
    try:
        w = Walk(server, context, "branch-search-no-js")
        signed_in(w, organisation(server))
        w.goto("/account")
        w.press("企业账号实名认证")
        w.page.get_by_label("对公账户打款认证").check()
        w.press("下一步")
        w.heading("填写对公账户信息")
        account = new_account_number()
        w.fill("对公账号", account)
        w.fill("开户网点", "工商 北京")
        w.shot("typed")
        # No suggestions without scripts: the search button shows the same step with
        # the matching branches to pick from.
        w.page.get_by_role("button", name="搜索开户网点").click()
        w.heading("填写对公账户信息")
        branches = w.page.get_by_role("radio")
        expect(branches.first).to_be_visible()
        expect(w.page.locator("#found-branch_code")).to_contain_text("请选择一个")
        expect(w.page.get_by_label("重新搜索开户网点")).to_have_value("工商 北京")
        # The account number is not shown again: the page says to type it again.
        expect(w.page.get_by_label("对公账号", exact=True)).to_have_value("")
        expect(w.page.locator("#retype-account_number")).to_be_visible()
        w.shot("branches-found")
        picked = branches.first.get_attribute("value")
        assert picked
        assert picked.isdigit()
        name = w.page.locator("label[for=field-branch_code]").inner_text()
        branches.first.check()
        w.fill("对公账号", account)
        w.press("确认打款")
        w.heading("已向对公账户打款，请填写收到的金额")
        expect(w.page.locator("dt:text-is('开户网点') + dd")).to_have_text(name)
        w.shot("awaiting-deposit")
    finally:
        context.close()


def test_an_organisation_verifies_by_the_legal_representatives_face(
        server: Server, context: BrowserContext) -> None:
    w = Walk(server, context, "legal-face")
    signed_in(w, organisation(server))
    w.goto("/account")
    w.press("企业账号实名认证")
    w.heading("选择认证方式")
    expect(w.page.get_by_label("法定代表人姓名")).to_have_value(REP_NAME)
    w.page.get_by_label("法定代表人刷脸认证").check()
    w.press("下一步")
    w.heading("法定代表人刷脸认证：请用支付宝或微信扫码")
    expect(w.page.get_by_role("img", name="人脸识别二维码")).to_be_visible()
    w.shot("face")
    # The first scan fails, on the sandbox phone page; the waiting page moves on.
    phone_page = context.new_page()
    link = w.page.get_by_role("link", name="无法扫码？在手机上打开此链接")
    first = link.get_attribute("href") or ""
    phone_page.goto(first)
    phone_page.get_by_role("button", name=re.compile("^不通过")).click()
    done_with(phone_page)
    w.heading("人脸识别未通过")
    w.shot("face-failed")
    w.press("重新识别")
    w.heading("法定代表人刷脸认证：请用支付宝或微信扫码")
    # The same heading as before: wait for the new session's link (the old session's
    # scan would be refused as superseded).
    link = w.page.get_by_role("link", name="无法扫码？在手机上打开此链接")
    expect(link).not_to_have_attribute("href", first)
    phone_page = context.new_page()
    phone_page.goto(link.get_attribute("href") or "")
    phone_page.get_by_role("button", name=re.compile("^通过")).click()
    done_with(phone_page)
    w.heading("企业已认证")
    w.shot("verified")


def test_an_organisation_resets_its_password_with_an_agents_phone(
        server: Server, context: BrowserContext) -> None:
    org = organisation(server)
    assert org.phone is not None
    w = Walk(server, context, "legal-reset")
    w.goto("/?tab=legal")
    w.page.get_by_role("link", name="法人账户忘记密码").click()
    w.press("开始办理")
    w.heading("验证经办人手机号码")
    w.fill("经办人手机号码", org.phone)
    w.press("获取验证码")
    expect(w.page.locator("#status-mobile")).to_have_text("获取验证码：成功")
    w.fill("短信验证码", w.sms_code(org.phone))
    w.shot("verify-phone")
    w.press("下一步")
    w.heading("设置新密码")
    new = "Another-Horse-8"
    w.fill("单位账号登录名", org.login_name)
    w.fill("新密码", new)
    w.fill("确认新密码", new)
    w.shot("new-password")
    w.press("确定")
    w.heading("密码已重置，6秒后自动跳转登录页")
    w.shot("done")
    # After the six seconds, the sign-in form itself, ready to type in.
    w.heading("法人登录")
    expect(w.page.get_by_label("登录名", exact=True)).to_be_visible()
    expect(w.page.get_by_role("img", name="图形验证码图片")).to_be_visible()
    w.shot("sign-in")
    w.fill("登录名", org.login_name)
    w.fill("密码", new)
    w.fill("图形验证码", w.captcha())
    w.press("登录")
    w.heading("经办人验证")
    w.shot("agent-check")
