"""The web client's one message catalogue: every text of its pages that is not a label
from flows.yaml, in Chinese and English."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from flows.identity import CHINA

LANGUAGES = ("zh", "en")
DEFAULT = "zh"

# Named TEXTS, not MESSAGES: these are page texts, not error ids (web/catalogue.py reads
# tables named *MESSAGES as error messages).
TEXTS: dict[str, tuple[str, str]] = {
    "site_name": ("统一身份认证平台", "Unified identity platform"),
    "skip_to_content": ("跳到主要内容", "Skip to the main content"),
    "language_switch": ("English", "中文"),
    "home": ("首页", "Home"),
    "account": ("个人中心", "My account"),
    "sign_out": ("退出登录", "Sign out"),
    "sign_in": ("登录", "Sign in"),
    "tab_personal": ("个人登录", "Personal sign-in"),
    "tab_legal": ("法人登录", "Organisation sign-in"),
    "tabs_label": ("登录方式", "How to sign in"),
    "personal_intro": ("使用身份证号码、手机号码或登录名登录。",
                       "Sign in with your ID number, mobile number or login name."),
    "legal_intro": ("使用企业账号登录名登录，并由经办人短信验证。",
                    "Sign in with the organisation's login name; an agent confirms by SMS."),
    "register_personal": ("个人账号注册", "Register a personal account"),
    "register_legal": ("法人账号注册", "Register an organisation"),
    "forgot_personal": ("个人账户忘记密码", "Forgot the personal password"),
    "forgot_legal": ("法人账户忘记密码", "Forgot the organisation's password"),
    "no_account": ("还没有账号？", "No account yet?"),
    "start": ("开始办理", "Start"),
    "resume": ("继续办理", "Continue"),
    "start_intro": ("点击下方按钮开始办理。", "Press the button below to start."),
    "errors_title": ("请修改以下问题：", "Please correct the following:"),
    "field_error": ("{label}：{message}", "{label}: {message}"),
    "stale": ("页面已过期：该事项已进入下一步，以下为最新内容，请核对后重新操作。",
              "This page was out of date: the procedure had moved on. Here is where it is "
              "now; check it and try again."),
    "expired": ("该事项已过期，请重新办理。", "This procedure expired; please start again."),
    "start_again": ("重新办理", "Start again"),
    "captcha_image": ("图形验证码图片", "Captcha picture"),
    "captcha_refresh": ("看不清？换一张", "Can't read it? Get another"),
    "qr_code": ("人脸识别二维码", "QR code for face verification"),
    "qr_link": ("无法扫码？在手机上打开此链接", "Cannot scan? Open this link on the phone"),
    "waiting": ("正在等待结果，页面会自动更新。", "Waiting for the result; this page updates "
                "on its own."),
    "refresh": ("刷新", "Refresh"),
    "going_in": ("{seconds}秒后自动前往：", "Going on its own in {seconds} s:"),
    "entered_before": ("已填写 {masked}，为保护隐私请再次输入完整号码",
                       "{masked} was entered; for privacy, type the whole number again"),
    "inline_done": ("{label}：成功", "{label}: done"),
    # A field's search without scripts (web/client/search.py)
    "search": ("搜索", "Search"),
    "search_field": ("搜索{label}", "Search: {label}"),
    "search_again": ("重新搜索{label}", "Search again: {label}"),
    "search_found": ("找到 {count} 个结果，请选择一个：", "{count} found; pick one:"),
    "search_more": ("结果较多，仅显示前 {count} 个；请选择一个，或输入更多文字缩小范围：",
                    "Many match; the first {count} are shown. Pick one, or type more "
                    "to narrow them down:"),
    "search_none": ("没有找到匹配的结果，请换个说法再搜索", "Nothing matches; try other words"),
    "search_empty": ("请输入要搜索的文字", "Type what to search for"),
    "search_too_long": ("搜索内容过长（最多100个字符）",
                        "Too long to search for (100 characters at most)"),
    "retype": ("请再次输入：为安全起见，此项未保留", "Type it again: for safety, it was not kept"),
    "yes": ("是", "Yes"),
    "no": ("否", "No"),
    "choose": ("请选择", "Choose"),
    "error_page": ("无法完成请求", "The request could not be done"),
    "csrf_refused": ("表单已失效，请返回并刷新页面后重试",
                     "This form is no longer valid; go back, reload the page and try again"),
    "not_found": ("没有找到该页面或事项", "No such page or procedure"),
    "back_home": ("返回首页", "Back to the home page"),
    "back_account": ("返回个人中心", "Back to my account"),
    # The personal center
    "account_title": ("个人中心", "My account"),
    "account_info": ("账号信息", "Account"),
    "login_name": ("登录名", "Login name"),
    "display_name": ("名称", "Name"),
    "kind": ("账号类型", "Account type"),
    "kind_personal": ("个人账号", "Personal account"),
    "kind_organisation": ("法人账号", "Organisation account"),
    "kind_supervisor": ("监管账号", "Supervisor account"),
    "kind_admin": ("管理员", "Administrator"),
    "id_number": ("身份证号码", "Resident ID number"),
    "mobile": ("手机号码", "Mobile number"),
    "none": ("未设置", "Not set"),
    "must_change_password": ("请尽快修改密码", "Please change your password"),
    "organisation": ("企业信息", "Organisation"),
    "org_name": ("企业名称", "Name"),
    "credit_code": ("统一社会信用代码", "Unified social credit code"),
    "legal_rep": ("法定代表人", "Legal representative"),
    "legal_rep_id": ("法定代表人身份证号码", "Legal representative's ID number"),
    "contact_mobile": ("联系电话", "Contact phone"),
    "verification": ("认证状态", "Verification"),
    "verified_by": ("认证方式", "Verified by"),
    "pending_change": ("待认证的变更", "A change waiting for verification"),
    "pending_change_expires": ("请在 {at}（北京时间）前完成认证，逾期此变更作废。",
                               "Verify it by {at} (Beijing time); after that the change "
                               "lapses."),
    "beijing_time": ("北京时间", "Beijing time"),
    "pending_change_intro": ("以下变更须重新认证后生效；在此之前，上方的认证信息继续有效。",
                             "These changes take effect once the organisation is verified "
                             "again; until then the data above stays in force."),
    "agents": ("经办人", "Agents"),
    "agent_name": ("姓名", "Name"),
    "primary_agent": ("主经办人", "Primary agent"),
    "you": ("（当前登录）", "(you)"),
    "seals": ("电子签章", "Electronic seals"),
    "no_seals": ("还没有电子印章。", "No seals yet."),
    "seal_preview": ("印章预览：{text}", "Seal preview: {text}"),
    "download_svg": ("下载 SVG", "Download SVG"),
    "download_png": ("下载 PNG", "Download PNG"),
    "offered": ("可办理事项", "What you can do"),
    # Single sign-on and the service hall
    "hall": ("服务大厅", "Service hall"),
    "hall_intro": ("选择要进入的业务系统，无需再次登录。",
                   "Choose a system to enter; you need not sign in again."),
    "sign_in_for": ("登录后将进入：{system}", "After signing in you go on to: {system}"),
    "continue_title": ("正在进入业务系统", "Entering the system"),
    "continue_to": ("登录成功，正在进入 {system}……", "Signed in; going on to {system}…"),
    "continue_link": ("进入 {system}", "Go to {system}"),
    # Shown once (a one-time password)
    "shown_once": ("请立即记录并通过安全渠道告知用户：离开或刷新本页后将不再显示。",
                   "Write it down now and tell the user by a safe channel: it is not shown "
                   "again once you leave or reload this page."),
    # The back office
    "console": ("后台管理", "Back office"),
    "console_intro": ("后台运营端仅供平台管理员使用。", "The back office is for the platform's "
                      "administrators only."),
    "admin_sign_in": ("管理员登录", "Administrator sign-in"),
    "admin_only": ("仅限后台管理员", "Only administrators may see this page"),
    "console_actions": ("业务办理", "Actions"),
    "audit_log": ("操作日志", "Audit log"),
    "audit_filter": ("筛选", "Filter"),
    "audit_clear": ("清除筛选", "Clear the filters"),
    "audit_at": ("时间", "Time"),
    "audit_actor": ("操作人", "Actor"),
    "audit_actor_help": ("登录名，或如 admin:账号标识；点击表中的操作人即可筛选",
                         "A login name, or e.g. admin:<account id>; or click an actor in "
                         "the table"),
    "audit_action": ("操作", "Action"),
    "audit_action_help": ("如 reset_password、verify_organisation、create_supervisor",
                          "e.g. reset_password, verify_organisation, create_supervisor"),
    "audit_target": ("对象", "Target"),
    "audit_target_help": ("登录名，或如 account:账号标识", "A login name, or e.g. "
                          "account:<account id>"),
    "audit_raw_id": ("标识", "ID"),
    "name_login": ("{name}（{login}）", "{name} ({login})"),
    "actor_device": ("未登录用户（设备）", "Someone not signed in (a device)"),
    "actor_timer": ("系统（定时任务）", "The system (a timer)"),
    "actor_anonymous": ("匿名", "Anonymous"),
    "audit_reason": ("原因", "Reason"),
    "audit_details": ("详情", "Details"),
    "audit_empty": ("没有符合条件的记录。", "No entries match."),
    "audit_pages": ("日志分页", "Pages of the log"),
    "audit_newest": ("最新记录", "Newest entries"),
    "audit_older": ("更早的记录", "Older entries"),
    "filter_too_long": ("内容过长（最多200个字符）", "Too long (200 characters at most)"),
}


def text(key: str, lang: str, **values: object) -> str:
    """The catalogue's text for ``key`` in ``lang``, with ``{name}`` filled in."""
    zh, en = TEXTS[key]
    found = en if lang == "en" else zh
    return found.format(**values) if values else found


def local_time(value: str | datetime | None) -> str:
    """A time as a person here reads it: Beijing time, to the minute ("2026-03-01
    17:00"); an ISO text as the API gives it, or a datetime (one without a zone: UTC)."""
    if value is None or value == "":
        return ""
    when = datetime.fromisoformat(value) if isinstance(value, str) else value
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    # The platform serves the mainland: Beijing time (UTC+8 all year).
    return when.astimezone(CHINA).strftime("%Y-%m-%d %H:%M")


def label(value: Mapping[str, str] | str | None, lang: str, fallback: str = "") -> str:
    """A {zh, en} label from flows.yaml in ``lang``; a plain text as it is (the options
    an action records for ``choices_from``, such as an agent's name and masked phone,
    are data, the same in every language)."""
    if not value:
        return fallback
    if isinstance(value, str):
        return value
    return value.get(lang) or value.get(DEFAULT) or fallback


def choose_language(cookie: str | None, accept_language: str | None) -> str:
    """The switch's cookie first, then the browser's first language that we have."""
    if cookie in LANGUAGES:
        return cookie
    ranked = []
    for i, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        primary = tag.strip().lower().split("-")[0]
        if primary in LANGUAGES and quality > 0:
            ranked.append((-quality, i, primary))
    return min(ranked)[2] if ranked else DEFAULT
