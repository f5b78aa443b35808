"""The sandbox pages (development only) and the branch search the real UI uses.

``setup_sandbox(app, providers)`` mounts ``/sandbox/...``: the pages where a developer
plays the outside world (SMS inbox, captcha answers, the face "phone", bank statements,
the real-name registry's answers, provider outages) and ``/sandbox/api/...``, the
providers' wire protocol served by the sandbox, so the HTTP implementations can be
pointed at it. Mount it only when a setting allows: the inbox shows phone numbers and
codes in full, the captcha page every answer.

``setup_branches(app, directory)`` mounts ``/api/branches``: always.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, urlsplit

from aiohttp import web

from flows.captcha import CaptchaAnswers
from flows.identity import mask_resident_id
from flows.providers import BranchDirectory, Providers
from flows.providers.sandbox import SWITCHABLE, SandboxBadRequest, SandboxNotFound
from web.problems import HttpProblem, json_response

PROVIDERS: web.AppKey[Providers] = web.AppKey("sandbox_providers")
BRANCHES: web.AppKey[BranchDirectory] = web.AppKey("branch_directory")
# Set only where answers are kept (development): the captcha pages need it.
CAPTCHA_ANSWERS: web.AppKey[CaptchaAnswers] = web.AppKey("sandbox_captcha_answers")

_sandbox = web.RouteTableDef()
_branches = web.RouteTableDef()

_LABELS = {"sms": ("短信网关", "SMS gateway"), "realname": ("实名登记库", "Real-name registry"),
           "face": ("人脸核验", "Face verification"), "payment": ("打款服务", "Payment"),
           "branches": ("银行网点目录", "Bank-branch directory")}
_MAX_LIMIT = 50

_CSS = """
body{font-family:system-ui,"PingFang SC","Microsoft YaHei",sans-serif;max-width:56rem;
margin:1.5rem auto;padding:0 1rem;color:#222;line-height:1.5}
nav a{margin-right:1rem}
.banner{background:#fff3cd;border:1px solid #e0c36b;padding:.4rem .8rem}
table{border-collapse:collapse;width:100%;margin:.5rem 0 1rem}
th,td{border-bottom:1px solid #ddd;padding:.35rem .5rem;text-align:left;vertical-align:top}
form.inline{display:inline}
button{font-size:1rem;padding:.35rem 1rem;cursor:pointer}
button.pass{background:#2e7d32;color:#fff;font-size:1.4rem;padding:.8rem 2rem}
button.fail{background:#c62828;color:#fff;font-size:1.4rem;padding:.8rem 2rem}
.muted{color:#777}.ok{color:#2e7d32}.bad{color:#c62828}
code{background:#f4f4f4;padding:0 .25rem}
"""

e = html.escape


def setup_sandbox(app: web.Application, providers: Providers,
                  captcha_answers: CaptchaAnswers | None = None) -> None:
    """Mount the sandbox pages and API; their data comes from ``providers.sandbox``."""
    app[PROVIDERS] = providers
    if captcha_answers is not None:
        app[CAPTCHA_ANSWERS] = captcha_answers
    app.add_routes(sandbox_routes())


def setup_branches(app: web.Application, directory: BranchDirectory) -> None:
    """Mount ``/api/branches`` over this directory (usually ``providers.branches``)."""
    app[BRANCHES] = directory
    app.add_routes(branch_routes())


def sandbox_routes() -> web.RouteTableDef:
    """The /sandbox/ routes; their handlers read ``app[PROVIDERS]``."""
    return _sandbox


def branch_routes() -> web.RouteTableDef:
    """The /api/branches routes; their handlers read ``app[BRANCHES]``."""
    return _branches


# -- helpers ------------------------------------------------------------------------


def _page(title: str, body: str, *, status: int = 200) -> web.Response:
    nav = ('<nav><a href="/sandbox/">沙箱首页 Sandbox</a><a href="/sandbox/sms">短信 SMS</a>'
           '<a href="/sandbox/captchas">图形验证码 Captchas</a>'
           '<a href="/sandbox/registry">实名库 Registry</a>'
           '<a href="/sandbox/bank">银行流水 Bank</a></nav>')
    text = (f'<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>{e(title)}</title><style>{_CSS}</style></head><body>{nav}"
            f'<p class="banner">沙箱：仅供开发测试，不是真实服务。'
            f"Sandbox: for development only, not the real services.</p>"
            f"<h1>{e(title)}</h1>{body}</body></html>")
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8",
                        headers={"Cache-Control": "no-store",
                                 "Content-Security-Policy": "default-src 'none'; "
                                 "style-src 'unsafe-inline'; form-action 'self'; "
                                 "frame-ancestors 'none'"})


def _json(body: Any, status: int = 200) -> web.Response:
    return json_response(body, status=status)


def _see_other(location: str) -> web.HTTPSeeOther:
    return web.HTTPSeeOther(location)


def _providers(request: web.Request) -> Providers:
    return request.app[PROVIDERS]


def _same_origin(request: web.Request) -> None:
    """Refuse a form posted from another site: the sandbox has no login to protect it."""
    origin = request.headers.get("Origin")
    cross = request.headers.get("Sec-Fetch-Site") == "cross-site"
    if cross or (origin and origin != "null" and urlsplit(origin).netloc != request.host):
        raise HttpProblem(403, "sandbox_cross_origin", "不接受来自其他网站的沙箱请求",
                          "The sandbox refuses forms posted from another site")


async def _form(request: web.Request) -> dict[str, str]:
    _same_origin(request)
    data = await request.post()
    return {k: v for k, v in data.items() if isinstance(v, str)}


def _yuan(fen: Any) -> str:
    return f"{int(fen) / 100:.2f}" if isinstance(fen, int) else "?"


def _rows(cells: Iterable[Iterable[str]]) -> str:
    return "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in cells)


def _limit(request: web.Request, default: int = 20) -> int:
    text = request.query.get("limit", "")
    if not text:
        return default
    if not text.isdigit() or not 1 <= int(text) <= _MAX_LIMIT:
        raise HttpProblem(400, "limit_invalid", f"limit 应为 1-{_MAX_LIMIT} 的整数",
                          f"limit must be a whole number from 1 to {_MAX_LIMIT}",
                          field="limit")
    return int(text)


# -- index, switches ------------------------------------------------------------------


@_sandbox.get("/sandbox/")
@_sandbox.get("/sandbox")
async def index(request: web.Request) -> web.Response:
    providers = _providers(request)
    down = await providers.sandbox.switches.down()
    rows = []
    for service, (zh, en) in _LABELS.items():
        mode = providers.modes.get(service, "?")
        if service in SWITCHABLE:
            is_down = down[service]
            state = ('<span class="bad">故障中 down</span>' if is_down
                     else '<span class="ok">正常 up</span>')
            label = "恢复 Bring up" if is_down else "模拟故障 Switch down"
            toggle = (f'<form class="inline" method="post" action="/sandbox/switches">'
                      f'<input type="hidden" name="provider" value="{e(service)}">'
                      f'<input type="hidden" name="down" value="{"0" if is_down else "1"}">'
                      f"<button>{label}</button></form>")
        else:
            state, toggle = '<span class="muted">-</span>', ""
        rows.append((f"{e(zh)} {e(en)}", f"<code>{e(mode)}</code>", state, toggle))
    body = (
        "<p>这些页面扮演外部服务：读短信、在“手机”上通过或拒绝人脸核验、查看到账金额。"
        "These pages play the outside services: read texts, pass or fail a face check on "
        "the \"phone\", look up a deposit's amount.</p>"
        "<table><tr><th>服务 Service</th><th>实现 Implementation</th>"
        "<th>沙箱状态 Sandbox state</th><th></th></tr>" + _rows(rows) + "</table>"
        "<ul><li><a href=\"/sandbox/sms\">短信收件箱 SMS inbox</a> "
        "(<a href=\"/sandbox/sms.json\">JSON</a>)</li>"
        "<li><a href=\"/sandbox/captchas\">图形验证码答案 Captcha answers</a> "
        "(<a href=\"/sandbox/captchas.json\">JSON</a>)</li>"
        "<li><a href=\"/sandbox/registry\">实名登记库 Real-name registry answers</a></li>"
        "<li><a href=\"/sandbox/bank\">银行流水 Bank statements</a></li>"
        "<li>人脸核验 Face: open the session's QR link, <code>/sandbox/face/&lt;id&gt;</code></li>"
        "</ul>"
        "<form method=\"get\" action=\"/sandbox/branches\">"
        "<label>网点搜索 Branch search (JSON) <input name=\"q\" placeholder=\"工商 海淀\">"
        "</label> <button>搜索 Search</button></form>"
        "<p class=\"muted\">“模拟故障”只影响沙箱实现。Switching down affects the sandbox "
        "implementations only.</p>")
    return _page("开发沙箱 Development sandbox", body)


@_sandbox.post("/sandbox/switches")
async def switches(request: web.Request) -> web.Response:
    form = await _form(request)
    provider = form.get("provider", "")
    if provider not in SWITCHABLE:
        raise SandboxBadRequest(f"provider must be one of {', '.join(SWITCHABLE)}")
    await _providers(request).sandbox.switches.set_down(provider, form.get("down") == "1")
    raise _see_other("/sandbox/")


# -- SMS -------------------------------------------------------------------------------


@_sandbox.get("/sandbox/sms")
async def sms_inbox(request: web.Request) -> web.Response:
    phone = request.query.get("phone", "").strip()
    messages = await _providers(request).sandbox.sms.inbox(phone or None)
    rows = [(e(str(m.get("at", ""))),
             f'<a href="/sandbox/sms?phone={quote(str(m.get("phone", "")))}">'
             f'{e(str(m.get("phone", "")))}</a>',
             e(str(m.get("text", "")))) for m in messages]
    body = (f'<form method="get"><label>手机号 Phone <input name="phone" value="{e(phone)}">'
            f"</label> <button>筛选 Filter</button> <a href=\"/sandbox/sms\">全部 All</a></form>"
            + ("<table><tr><th>时间 Time</th><th>手机号 Phone</th><th>内容 Text</th></tr>"
               + _rows(rows) + "</table>" if rows
               else '<p class="muted">没有短信。No messages.</p>')
            + '<p><a href="">刷新 Refresh</a></p>')
    return _page("短信收件箱 SMS inbox", body)


@_sandbox.get("/sandbox/sms.json")
async def sms_inbox_json(request: web.Request) -> web.Response:
    phone = request.query.get("phone", "").strip()
    return _json({"messages": await _providers(request).sandbox.sms.inbox(phone or None)})


# -- captchas ---------------------------------------------------------------------------

_INSTANCE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


async def _captchas(request: web.Request) -> tuple[str, list[dict[str, Any]]]:
    answers = request.app.get(CAPTCHA_ANSWERS)
    if answers is None:
        raise SandboxNotFound("this server keeps no captcha answers")
    instance = request.query.get("instance", "").strip()
    if instance and not _INSTANCE.match(instance):
        raise HttpProblem(400, "instance_invalid", "instance 应为流程实例编号",
                          "instance must be a flow instance id", field="instance")
    return instance, await answers.recent(instance or None, _limit(request))


@_sandbox.get("/sandbox/captchas")
async def captcha_answers(request: web.Request) -> web.Response:
    instance, found = await _captchas(request)
    rows = [(e(str(c.get("at", ""))),
             f'<a href="/sandbox/captchas?instance={quote(str(c.get("instance_id", "")))}">'
             f'<code>{e(str(c.get("instance_id", "")))}</code></a>',
             f'<strong><code>{e(str(c.get("answer", "")))}</code></strong>') for c in found]
    body = (f'<form method="get"><label>流程实例 Flow instance <input name="instance" '
            f'value="{e(instance)}"></label> <button>筛选 Filter</button> '
            f'<a href="/sandbox/captchas">全部 All</a></form>'
            + ("<table><tr><th>时间 Time</th><th>流程实例 Instance</th><th>答案 Answer</th>"
               "</tr>" + _rows(rows) + "</table>" if rows
               else '<p class="muted">没有未过期的图形验证码。No captchas that have not '
                    "expired.</p>")
            + '<p class="muted">每个实例只有最新的图片有效，且只能用一次。Only the newest '
              "image of an instance works, and once.</p><p><a href=\"\">刷新 Refresh</a></p>")
    return _page("图形验证码答案 Captcha answers", body)


@_sandbox.get("/sandbox/captchas.json")
async def captcha_answers_json(request: web.Request) -> web.Response:
    _, found = await _captchas(request)
    return _json({"captchas": found})


# -- face verification -----------------------------------------------------------------


_SESSION = "{session_id:[A-Za-z0-9_-]{1,64}}"


@_sandbox.get(f"/sandbox/face/{_SESSION}.json")
async def face_session_json(request: web.Request) -> web.Response:
    session = await _providers(request).sandbox.face.session(request.match_info["session_id"])
    if session is None:
        raise SandboxNotFound("no such face session")
    session.pop("callback_url", None)
    return _json(session)


@_sandbox.get(f"/sandbox/face/{_SESSION}")
async def face_phone(request: web.Request) -> web.Response:
    session_id = request.match_info["session_id"]
    session = await _providers(request).sandbox.face.session(session_id)
    if session is None:
        return _page("人脸核验 Face verification",
                     '<p class="bad">没有这个会话（可能已过期）。'
                     "No such session (it may have expired).</p>", status=404)
    event = session.get("event")
    delivery = session.get("delivery")
    parts = [f"<p>姓名 Name: <strong>{e(str(session.get('name', '')))}</strong><br>"
             f"证件号码 ID number: <code>{e(str(session.get('id_masked', '')))}</code></p>"]
    if event:
        result = str(event.get("result"))
        css = "ok" if result == "pass" else "bad"
        parts.append(f'<p>结果 Result: <strong class="{css}">'
                     f"{'通过 pass' if result == 'pass' else '未通过 fail'}</strong></p>")
    if delivery:
        if delivery.get("status") is not None:
            parts.append(f"<p>回调 Callback: HTTP {e(str(delivery['status']))} "
                         f"<span class=\"muted\">{e(str(delivery.get('at', '')))}</span></p>")
        else:
            parts.append(f'<p class="bad">回调失败 Callback failed: '
                         f"{e(str(delivery.get('error', '')))}</p>")
    buttons = []
    for result, css, label in (("pass", "pass", "通过 Pass"), ("fail", "fail", "不通过 Fail")):
        if event and event.get("result") != result:
            continue
        text = "重新发送回调 Resend callback" if event else label
        buttons.append(f'<form class="inline" method="post">'
                       f'<input type="hidden" name="result" value="{result}">'
                       f'<button class="{css}">{text}</button></form>')
    parts.append("<p>" + "".join(buttons) + "</p>")
    parts.append('<p class="muted">真实环境中，用户用支付宝或微信扫码完成刷脸。'
                 "In production the user scans the QR code with Alipay or WeChat.</p>")
    return _page("人脸核验 Face verification", "".join(parts))


@_sandbox.post(f"/sandbox/face/{_SESSION}")
async def face_decide(request: web.Request) -> web.Response:
    session_id = request.match_info["session_id"]
    form = await _form(request)
    await _providers(request).sandbox.face.complete(session_id, form.get("result", ""))
    raise _see_other(f"/sandbox/face/{session_id}")


# -- bank statements -------------------------------------------------------------------


_ACCOUNT = "{account:[0-9]{1,40}}"


@_sandbox.get("/sandbox/bank")
async def bank_lookup(request: web.Request) -> web.Response:
    account = "".join(request.query.get("account", "").split())
    if account.isdigit() and len(account) <= 40:
        raise _see_other(f"/sandbox/bank/{account}")
    body = ('<form method="get"><label>账号 Account number <input name="account" '
            'inputmode="numeric"></label> <button>查看流水 Show statement</button></form>')
    return _page("银行流水 Bank statements", body)


async def _statement(request: web.Request) -> tuple[str, list[dict[str, Any]]]:
    account = request.match_info["account"]
    return account, await _providers(request).sandbox.payment.statement(account)


@_sandbox.get(f"/sandbox/bank/{_ACCOUNT}.json")
async def bank_statement_json(request: web.Request) -> web.Response:
    account, lines = await _statement(request)
    return _json({"account_number": account, "credits": lines})


@_sandbox.get(f"/sandbox/bank/{_ACCOUNT}")
async def bank_statement(request: web.Request) -> web.Response:
    account, lines = await _statement(request)
    directory = _providers(request).sandbox.branches
    rows = []
    for line in lines:
        branch = await directory.get(str(line.get("branch_code", "")))
        rows.append((e(str(line.get("at", ""))),
                     f"<strong>{_yuan(line.get('amount_fen'))}</strong> 元 "
                     f"({e(str(line.get('amount_fen')))} 分 fen)",
                     e(str(line.get("memo", ""))),
                     e(branch.name if branch else str(line.get("branch_code", ""))),
                     f"<code>{e(str(line.get('deposit_id', '')))}</code>"))
    body = (f"<p>账号 Account: <code>{e(account)}</code></p>"
            + ("<table><tr><th>入账时间 Credited</th><th>金额 Amount</th><th>摘要 Memo</th>"
               "<th>开户网点 Branch</th><th>流水号 Deposit</th></tr>" + _rows(rows) + "</table>"
               if rows else '<p class="muted">暂无入账。No credits yet.</p>')
            + '<p><a href="">刷新 Refresh</a></p>')
    return _page("银行流水 Bank statement", body)


# -- real-name registry ------------------------------------------------------------------


@_sandbox.get("/sandbox/registry")
async def registry_page(request: web.Request) -> web.Response:
    config = await _providers(request).sandbox.realname.config()

    def remove(action: str, fields: dict[str, str]) -> str:
        hidden = "".join(f'<input type="hidden" name="{k}" value="{e(v)}">'
                         for k, v in fields.items())
        return (f'<form class="inline" method="post"><input type="hidden" name="action" '
                f'value="{action}">{hidden}<button>删除 Remove</button></form>')

    # The page shows IDs masked like every other page; the buttons post a token.
    pairs = [(e(n), f"<code>{e(mask_resident_id(i))}</code>",
              remove("remove_pair", {"token": config.token(n, i)})) for n, i in config.pairs]
    ids = [(f"<code>{e(mask_resident_id(i))}</code>",
            remove("remove_id", {"token": config.token(i)})) for i in config.ids]
    body = (
        "<p>沙箱登记库默认回答“一致”，以下情况除外。The sandbox registry answers "
        "\"match\" except for these.</p>"
        "<h2>不一致的姓名+证件号 Mismatching name + ID pairs</h2>"
        + ("<table>" + _rows(pairs) + "</table>" if pairs else '<p class="muted">无 None</p>')
        + '<form method="post"><input type="hidden" name="action" value="add_pair">'
        '<label>姓名 Name <input name="name" required></label> '
        '<label>证件号 ID <input name="id_number" required></label> '
        "<button>添加 Add</button></form>"
        "<h2>任何姓名都不一致的证件号 IDs that never match</h2>"
        + ("<table>" + _rows(ids) + "</table>" if ids else '<p class="muted">无 None</p>')
        + '<form method="post"><input type="hidden" name="action" value="add_id">'
        '<label>证件号 ID <input name="id_number" required></label> '
        "<button>添加 Add</button></form>"
        '<form method="post"><input type="hidden" name="action" value="reset">'
        "<p><button>恢复启动配置 Reset to the configured lists</button></p></form>")
    return _page("实名登记库 Real-name registry", body)


@_sandbox.post("/sandbox/registry")
async def registry_change(request: web.Request) -> web.Response:
    form = await _form(request)
    registry = _providers(request).sandbox.realname
    name, id_number = form.get("name", ""), form.get("id_number", "")
    action = form.get("action", "")
    if action == "add_pair":
        await registry.add_pair(name, id_number)
    elif action == "remove_pair":
        config = await registry.config()
        token = form.get("token")
        chosen = [p for p in config.pairs if config.token(*p) == token] if token else [
            (name, id_number)]
        for pair in chosen:
            await registry.remove_pair(*pair)
    elif action == "add_id":
        await registry.add_id(id_number)
    elif action == "remove_id":
        config = await registry.config()
        token = form.get("token")
        for known in [i for i in config.ids if config.token(i) == token] if token else [
                id_number]:
            await registry.remove_id(known)
    elif action == "reset":
        await registry.reset()
    else:
        raise SandboxBadRequest("action must be add_pair, remove_pair, add_id, remove_id "
                                "or reset")
    raise _see_other("/sandbox/registry")


# -- branch search ------------------------------------------------------------------------


async def _search(directory: BranchDirectory, request: web.Request) -> web.Response:
    query = request.query.get("q", "")
    limit = _limit(request)
    found = await directory.search(query, limit) if query.strip() else []
    return _json({"query": query, "branches": [b.as_dict() for b in found]})


@_sandbox.get("/sandbox/branches")
async def sandbox_branches(request: web.Request) -> web.Response:
    return await _search(_providers(request).branches, request)


@_branches.get("/api/branches")
async def search_branches(request: web.Request) -> web.Response:
    return await _search(request.app[BRANCHES], request)


@_branches.get("/api/branches/{code}")
async def get_branch(request: web.Request) -> web.Response:
    branch = await request.app[BRANCHES].get(request.match_info["code"])
    if branch is None:
        raise HttpProblem(404, "branch_not_found", "没有这个银行网点，请从搜索结果中选择",
                          "No such bank branch: pick one from the search results",
                          field="branch_code")
    return _json({"branch": branch.as_dict()})


# -- the providers' wire protocol, served by the sandbox ------------------------------


async def _api_body(request: web.Request) -> dict[str, Any]:
    try:
        value = await request.json()
    except (UnicodeError, ValueError):
        raise SandboxBadRequest("the body is not JSON") from None
    if not isinstance(value, dict):
        raise SandboxBadRequest("the body must be a JSON object")
    return value


def _text(body: dict[str, Any], field: str) -> str:
    value = body.get(field)
    if not isinstance(value, str) or not value.strip() or len(value) > 2000:
        raise SandboxBadRequest(f"{field} must be a non-empty string", field=field)
    return value


def _idempotency_key(request: web.Request) -> str:
    key = request.headers.get("Idempotency-Key", "")
    if not key or len(key) > 200:
        raise HttpProblem(400, "idempotency_key_missing", "缺少幂等键",
                          "This call needs an Idempotency-Key header (1-200 characters)",
                          field="Idempotency-Key")
    return key


@_sandbox.post("/sandbox/api/sms/messages")
async def api_sms(request: web.Request) -> web.Response:
    body = await _api_body(request)
    await _providers(request).sandbox.sms.send(_text(body, "phone"), _text(body, "text"),
                                               idempotency_key=_idempotency_key(request))
    return _json({"status": "accepted"}, status=202)


@_sandbox.post("/sandbox/api/realname/checks")
async def api_realname(request: web.Request) -> web.Response:
    body = await _api_body(request)
    match = await _providers(request).sandbox.realname.check(
        _text(body, "name"), _text(body, "id_number"),
        idempotency_key=_idempotency_key(request))
    return _json({"match": match})


@_sandbox.post("/sandbox/api/face/sessions")
async def api_face(request: web.Request) -> web.Response:
    body = await _api_body(request)
    session = await _providers(request).sandbox.face.create_session(
        _text(body, "name"), _text(body, "id_number"),
        callback_url=_text(body, "callback_url"), idempotency_key=_idempotency_key(request))
    return _json({"session_id": session.session_id, "qr_url": session.qr_url}, status=201)


@_sandbox.post("/sandbox/api/payment/deposits")
async def api_payment(request: web.Request) -> web.Response:
    body = await _api_body(request)
    deposit_id = await _providers(request).sandbox.payment.send_deposit(
        _text(body, "account_number"), _text(body, "branch_code"),
        callback_url=_text(body, "callback_url"), idempotency_key=_idempotency_key(request))
    return _json({"deposit_id": deposit_id}, status=201)


@_sandbox.post("/sandbox/api/branches/search")
async def api_branch_search(request: web.Request) -> web.Response:
    body = await _api_body(request)
    query = body.get("q")
    limit = body.get("limit", 20)
    if not isinstance(query, str) or not isinstance(limit, int) or not 1 <= limit <= 100:
        raise SandboxBadRequest("q must be a string and limit a number from 1 to 100")
    found = await _providers(request).sandbox.branches.search(query, limit)
    return _json({"branches": [b.as_dict() for b in found]})


@_sandbox.post("/sandbox/api/branches/get")
async def api_branch_get(request: web.Request) -> web.Response:
    body = await _api_body(request)
    branch = await _providers(request).sandbox.branches.get(_text(body, "code"))
    return _json({"branch": branch.as_dict() if branch else None})


__all__ = [
    "BRANCHES",
    "CAPTCHA_ANSWERS",
    "PROVIDERS",
    "branch_routes",
    "sandbox_routes",
    "setup_branches",
    "setup_sandbox",
]
