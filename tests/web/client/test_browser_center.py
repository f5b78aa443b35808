"""The personal center's procedures walked in Chromium, each started from the flows the
account page offers: a person changes the phone and the password, then signs in with
both; a verified organisation changes its certification data (pending until the face of
the legal representative named in the change verifies it) and withdraws another change;
its primary agent adds, removes and hands the role over; its seals are made, restyled,
downloaded and deleted."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import BrowserContext, expect

from tests.flows.test_verification import REP_NAME, Who, new_organisation, new_person
from tests.platform import PASSWORD, Platform, new_id_number, new_mobile
from tests.web.client.conftest import Server
from tests.web.client.test_browser_legal import signed_in
from tests.web.client.walk import Walk, done_with

pytestmark = pytest.mark.browser


def person(server: Server) -> Who:
    """A personal account with a phone, and a session of it."""
    app = server.app
    assert app is not None
    found: Who = server.run(new_person(Platform(None, app)))  # type: ignore[arg-type]
    return found


def verified_organisation(server: Server) -> Who:
    """A verified organisation whose primary agent, its legal representative, is signed in."""
    app = server.app
    assert app is not None
    found: Who = server.run(new_organisation(Platform(None, app),  # type: ignore[arg-type]
                                             verified=True))
    return found


def test_a_person_changes_the_phone_and_the_password_then_signs_in_with_both(
        server: Server, context: BrowserContext) -> None:
    who = person(server)
    assert who.phone is not None
    w = Walk(server, context, "center-person")
    signed_in(w, who)
    w.goto("/account")
    w.heading("个人中心")
    w.shot("account")

    w.press("绑定手机号")
    w.heading("更换绑定的手机号码")
    expect(w.page.locator("dl.shown")).to_contain_text(who.phone[-4:])
    assert who.phone not in w.page.content()
    w.shot("phone-overview")
    w.press("下一步")
    w.heading("验证当前手机号码")
    current = w.page.get_by_label("当前手机号码")
    expect(current).not_to_be_editable()
    w.press("获取验证码")
    # The button beside the locked number steps the flow without leaving the page.
    expect(w.page.locator("#status-current_mobile")).to_have_text("获取验证码：成功")
    expect(current).to_have_value(who.phone[:3] + "****" + who.phone[-4:])
    w.fill("短信验证码", w.sms_code(who.phone))
    w.shot("current-phone")
    w.press("下一步")

    w.heading("验证新手机号码")
    new = new_mobile()
    w.fill("新手机号码", new)
    w.press("获取验证码")
    expect(w.page.locator("#status-mobile")).to_have_text("获取验证码：成功")
    w.fill("短信验证码", "000000")
    w.press("确定更换")
    expect(w.page.locator("#error-sms_code")).to_be_visible()
    w.shot("new-phone-wrong-code")
    w.fill("新手机号码", new)
    w.fill("短信验证码", w.sms_code(new))
    w.press("确定更换")
    w.heading("手机号码已更换，其他设备上的登录已退出")
    expect(w.page.locator("dl.shown")).to_contain_text(new[-4:])
    assert new not in w.page.content()
    w.shot("phone-changed")
    w.page.get_by_role("link", name="返回个人中心").click()
    w.heading("个人中心")
    expect(w.page.locator("dl.shown").first).to_contain_text(new[-4:])

    w.press("修改密码")
    w.heading("修改密码")
    password = "Another-Horse-8"
    w.fill("当前密码", "Wrong-Horse-9")
    w.fill("新密码", password)
    w.fill("确认新密码", password)
    w.press("确定")
    expect(w.page.get_by_role("alert")).to_be_visible()
    w.shot("password-refused")
    w.fill("当前密码", PASSWORD)
    w.fill("新密码", password)
    w.fill("确认新密码", password)
    w.shot("passwords")
    w.press("确定")
    w.heading("密码已修改，其他设备上的登录已退出")
    w.shot("password-changed")

    # Signed out, the new phone and the new password sign in.
    w.press("退出登录")
    w.goto("/")
    w.press("登录")
    w.sign_in(new, password)
    w.heading("登录成功")
    w.shot("signed-in")


def test_a_verified_organisations_change_waits_for_the_new_representatives_face(
        server: Server, context: BrowserContext) -> None:
    org = verified_organisation(server)
    w = Walk(server, context, "certification-change")
    signed_in(w, org)
    w.goto("/account")
    expect(w.page.locator(".status-verified")).to_have_text("已认证")
    w.shot("account-verified")
    w.press("变更认证信息")
    w.heading("变更认证信息（已认证的单位须重新认证后生效）")
    expect(w.page.get_by_label("单位名称")).to_have_value("测试科技有限公司")
    w.shot("edit")
    rep_id = new_id_number()
    w.fill("单位名称", "示范新材料有限公司")
    w.fill("法定代表人姓名", "李娜")
    w.fill("法定代表人身份证号码", rep_id)
    w.press("提交变更")
    w.heading("变更待认证：请选择重新认证方式")
    expect(w.page.get_by_label("法定代表人姓名（变更后）")).to_have_value("李娜")
    # What changes, each by its name, as a list.
    expect(w.page.locator("dl.shown li")).to_have_text(["企业名称", "法定代表人姓名",
                                                        "法定代表人身份证号码"])
    assert rep_id not in w.page.content()
    w.shot("choose-method")

    # The account page: the data in force, and the change that waits for verification.
    w.page.get_by_role("link", name="测试科技有限公司").click()
    w.heading("个人中心")
    in_force = w.page.get_by_role("region", name="企业信息").locator("dl.shown").first
    expect(in_force).to_contain_text("测试科技有限公司")
    expect(in_force).to_contain_text(REP_NAME)
    pending = w.page.get_by_role("region", name="待认证的变更")
    expect(pending).to_contain_text("示范新材料有限公司")
    expect(pending).to_contain_text("李娜")
    expect(pending).to_contain_text(rep_id[-4:])
    # By when, in Beijing time: the change lapses with its flow.
    expect(pending.locator("p.deadline")).to_have_text(
        re.compile(r"请在 \d{4}-\d{2}-\d{2} \d{2}:\d{2}（北京时间）前完成认证，逾期此变更作废。"))
    assert rep_id not in w.page.content()
    w.shot("account-pending")
    pending.get_by_role("link", name="继续办理").click()

    w.heading("变更待认证：请选择重新认证方式")
    w.page.get_by_label("变更后的法定代表人刷脸认证").check()
    w.press("下一步")
    w.heading("法定代表人刷脸认证：请用支付宝或微信扫码")
    expect(w.page.locator("dl.shown")).to_contain_text("李娜")
    w.shot("face")
    # The face scanned is the representative's named in the change, not the one in force.
    phone_page = context.new_page()
    phone_page.goto(w.page.get_by_role("link", name="无法扫码？在手机上打开此链接")
                    .get_attribute("href") or "")
    expect(phone_page.locator("strong").first).to_have_text("李娜")
    phone_page.get_by_role("button", name=re.compile("^通过")).click()
    done_with(phone_page)
    w.heading("认证信息已变更")
    w.shot("applied")
    w.page.get_by_role("link", name="返回个人中心").click()
    w.heading("个人中心")
    expect(in_force).to_contain_text("示范新材料有限公司")
    expect(in_force).to_contain_text("李娜")
    expect(w.page.locator(".status-verified")).to_have_text("已认证")
    expect(w.page.get_by_role("region", name="待认证的变更")).to_have_count(0)
    w.shot("account-changed")

    # Another change, withdrawn: the data in force stays.
    w.press("变更认证信息")
    w.fill("单位名称", "另一家有限公司")
    w.press("提交变更")
    w.heading("变更待认证：请选择重新认证方式")
    w.press("撤回变更")
    w.heading("变更已撤回，原认证信息继续有效")
    w.shot("withdrawn")
    w.page.get_by_role("link", name="返回个人中心").click()
    expect(in_force).to_contain_text("示范新材料有限公司")
    expect(w.page.get_by_role("region", name="待认证的变更")).to_have_count(0)
    w.shot("account-after-withdrawal")


def test_the_primary_agent_adds_removes_and_hands_over_and_then_is_offered_none_of_it(
        server: Server, context: BrowserContext) -> None:
    org = verified_organisation(server)
    assert org.phone is not None
    w = Walk(server, context, "agents")
    signed_in(w, org)
    w.goto("/account")
    offers = w.page.get_by_role("region", name="可办理事项")
    primary = w.page.locator("tr.primary-agent")
    expect(primary).to_contain_text(REP_NAME)
    expect(primary).to_contain_text("（当前登录）")
    # One agent: nobody to remove or hand the role to.
    expect(offers.get_by_role("button", name="删除经办人")).to_have_count(0)
    expect(offers.get_by_role("button", name="变更主经办人")).to_have_count(0)
    w.shot("account-one-agent")

    phones = {}
    for name in ("刘洋", "陈静"):
        phones[name] = new_mobile()
        offers.get_by_role("button", name="添加经办人").click()
        w.heading("填写新经办人信息")
        # The agents so far, one a line, each by name, masked phone and primary mark.
        expect(w.page.locator("dl.shown li").first).to_have_text(
            re.compile(rf"^{REP_NAME} \d{{3}}\*{{4}}\d{{4}}（主经办人）$"))
        expect(w.page.locator("dl.shown li")).to_have_count(len(phones))
        w.fill("经办人姓名", name)
        w.fill("经办人身份证号码", new_id_number())
        w.fill("经办人手机号码", phones[name])
        w.press("获取验证码")
        expect(w.page.locator("#status-mobile")).to_have_text("获取验证码：成功")
        w.fill("短信验证码（由新经办人告知）", w.sms_code(phones[name]))
        w.shot(f"add-agent-{len(phones)}")
        w.press("添加")
        w.heading("经办人已添加")
        expect(w.page.locator("dl.shown")).to_contain_text(phones[name][-4:])
        assert phones[name] not in w.page.content()
        w.shot(f"agent-added-{len(phones)}")
        w.page.get_by_role("link", name="返回个人中心").click()
        w.heading("个人中心")
        expect(w.page.get_by_role("row", name=re.compile(name))).to_be_visible()
    w.shot("account-three-agents")

    offers.get_by_role("button", name="删除经办人").click()
    w.heading("选择要删除的经办人")
    w.page.get_by_label(re.compile("^陈静")).check()
    w.shot("remove-agent")
    w.press("删除")
    w.heading("经办人已删除，其登录已退出")
    w.shot("agent-removed")
    w.page.get_by_role("link", name="返回个人中心").click()
    expect(w.page.get_by_role("row", name=re.compile("陈静"))).to_have_count(0)

    offers.get_by_role("button", name="变更主经办人").click()
    w.heading("选择新的主经办人")
    # The primary agent is not among those to hand the role to.
    expect(w.page.get_by_label(re.compile(f"^{REP_NAME}"))).to_have_count(0)
    w.page.get_by_label(re.compile("^刘洋")).check()
    w.press("获取验证码")
    # Sent without leaving the page: the agent chosen stays chosen.
    expect(w.page.locator("#status-current_mobile")).to_have_text("获取验证码：成功")
    expect(w.page.get_by_label(re.compile("^刘洋"))).to_be_checked()
    w.fill("短信验证码", w.sms_code(org.phone))
    w.shot("transfer-primary")
    w.press("确定变更")
    w.heading("主经办人已变更")
    expect(w.page.locator("dl.shown")).to_contain_text("刘洋")
    w.shot("transferred")
    w.page.get_by_role("link", name="返回个人中心").click()

    # Now an ordinary agent: the new primary is marked, and none of it is offered.
    expect(primary).to_contain_text("刘洋")
    expect(w.page.get_by_role("row", name=re.compile(REP_NAME))).not_to_contain_text(
        "✔ 主经办人")
    for flow in ("添加经办人", "删除经办人", "变更主经办人"):
        expect(offers.get_by_role("button", name=flow)).to_have_count(0)
    expect(offers.get_by_role("button", name="变更认证信息")).to_be_visible()
    w.shot("account-ordinary-agent")


def test_an_organisation_makes_restyles_downloads_and_deletes_a_seal(
        server: Server, context: BrowserContext) -> None:
    w = Walk(server, context, "seals")
    signed_in(w, verified_organisation(server))
    w.goto("/account")
    offers = w.page.get_by_role("region", name="可办理事项")
    expect(offers.get_by_role("button", name="修改印章样式")).to_have_count(0)
    offers.get_by_role("button", name="创建电子印章").click()
    w.heading("创建电子印章")
    w.shot("overview")
    w.press("下一步")
    w.heading("圆形印章样式")
    w.page.get_by_label("思源宋体（粗）", exact=True).check()
    w.fill("印章内文（如：合同专用章，可不填）", "合同专用章")
    w.shot("style")
    w.press("创建印章")
    w.heading("印章已创建")
    w.shot("made")
    w.page.get_by_role("link", name="返回个人中心").click()

    seals = w.page.get_by_role("region", name="电子签章")
    preview = seals.get_by_role("img", name=re.compile("印章预览"))
    assert w.image_width(preview) > 0
    w.shot("account-with-seal")
    before = preview.screenshot()
    # Both downloads serve the image they name.
    svg = seals.get_by_role("link", name="下载 SVG")
    png = seals.get_by_role("link", name="下载 PNG")
    for link, kind, start in ((svg, "image/svg+xml", b"<"), (png, "image/png", b"\x89PNG")):
        assert link.get_attribute("download") is not None
        answer = context.request.get(server.url + (link.get_attribute("href") or ""))
        assert answer.ok, answer.status
        assert answer.headers["content-type"].startswith(kind)
        assert answer.body().lstrip().startswith(start)
    with w.page.expect_download() as download:
        png.click()
    assert download.value.suggested_filename.endswith(".png")

    # Another style: the preview on the account page shows it.
    offers.get_by_role("button", name="修改印章样式").click()
    w.heading("选择印章")
    w.page.get_by_label(re.compile("合同专用章")).check()
    w.shot("restyle-choose")
    w.press("下一步")
    w.heading("圆形印章样式")
    expect(w.page.get_by_label("颜色")).to_have_value("#d00000")  # red, as it was made
    w.fill("颜色", "blue")
    w.page.get_by_label("42", exact=True).check()
    w.shot("restyle")
    w.press("保存样式")
    w.heading("印章样式已修改")
    w.shot("restyled")
    w.page.get_by_role("link", name="返回个人中心").click()
    assert w.image_width(preview) > 0
    assert preview.screenshot() != before
    w.shot("account-restyled")

    # Deleted: gone from the page, its images no longer served.
    address = server.url + (svg.get_attribute("href") or "")
    offers.get_by_role("button", name="删除印章").click()
    w.heading("选择要删除的印章")
    w.page.get_by_label(re.compile("合同专用章")).check()
    w.press("删除印章")
    expect(w.page.locator("#error-confirm")).to_be_visible()
    w.shot("delete-unconfirmed")
    w.page.get_by_label(re.compile("合同专用章")).check()
    w.page.get_by_label("我确认删除此印章，删除后无法恢复").check()
    w.press("删除印章")
    w.heading("印章已删除")
    w.shot("deleted")
    w.page.get_by_role("link", name="返回个人中心").click()
    expect(seals.get_by_text("还没有电子印章。")).to_be_visible()
    assert context.request.get(address).status == 404
    w.shot("account-no-seal")
