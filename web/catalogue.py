"""Every error id the service can answer with: where it comes from, and what to do.

A problem's ``type`` is ``/problems/{error_id}`` (web/problems.py); each field error in
``errors[]`` and each step error shown in ``ui`` has an id of the same kind. The ids are
collected from where they are made, so a page cannot drift from its error:

- the engine's and the flows' error classes (subclasses of ``EngineError``, whose
  ``error_id``, status and messages are class attributes);
- the code that raises them in place: ``HttpProblem(status, id, zh, en)``,
  ``Invalid(id, zh, en)``, ``refuse(field, id, zh, en)``, ``FieldError(field, id, zh,
  en)``, the refusals actions declare (``Refusal(id, zh, en)``), the message tables
  (``{id: (zh, en)}``) and ``(id, zh, en)`` triples, read from the source of the
  ``engine``, ``flows``, ``storage`` and ``web`` packages;
- the loaded flows: a transition's ``error`` and a limit's ``error`` (so a reload that
  adds one adds its page).

What to do about each is written here, in ``ADVICE``; the tests require an entry for
every id the code and the project's ``flows.yaml`` can give.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.util
import pkgutil
import re
from collections.abc import Iterable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import attrs

from engine import EngineError, FlowSet, Registry

__all__ = ["ADVICE", "KINDS", "Occurrence", "ProblemType", "catalogue", "code_occurrences",
           "flow_occurrences"]

PACKAGES = ("engine", "flows", "storage", "web")
ERROR_ID = re.compile(r"^[a-z][a-z0-9_]*$")
_CJK = re.compile(r"[\u3400-\u9fff]")

# How an error id reaches a client, and the status of that answer.
KINDS = {
    "problem": "the answer's own error_id (problem+json)",
    "field": "a field's error in errors[] of a 422 validation_failed answer",
    "step": "the step was taken: the state entered shows it in ui (under a field, or for "
            "the whole step)",
    "limit": "a 429 answer, with Retry-After",
}
_KIND_ZH = {
    "problem": "应答本身的错误编号（problem+json）",
    "field": "422 validation_failed 应答 errors[] 中某个字段的错误",
    "step": "该步骤已执行：进入的步骤在 ui 中显示此提示（字段下方或整个步骤）",
    "limit": "429 应答，附 Retry-After",
}


@attrs.frozen
class Occurrence:
    """One place an error id is made, with the words it is said in there."""

    error_id: str
    kind: str  # problem | field | step | limit
    status: int | None  # None: it depends (a generic HTTP error)
    zh: str
    en: str
    where: str  # for developers: a source line, or the flow and transition

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "status": self.status, "zh": self.zh, "en": self.en}


@attrs.frozen
class ProblemType:
    """An error id's page: every way it is said, and what to do about it."""

    error_id: str
    occurrences: tuple[Occurrence, ...]
    todo: tuple[str, str] | None

    @property
    def status(self) -> int | None:
        return self.occurrences[0].status

    def as_dict(self) -> dict[str, Any]:
        seen: list[dict[str, Any]] = []
        for o in self.occurrences:
            if o.as_dict() not in seen:
                seen.append(o.as_dict())
        return {"error_id": self.error_id, "status": self.status,
                "kind": self.occurrences[0].kind, "messages": seen,
                "todo": {"zh": self.todo[0], "en": self.todo[1]} if self.todo else None}


# -- from the code ---------------------------------------------------------------------

# Callable name -> positions of (status or None, error id, zh, en) among its arguments.
_CALLS = {"HttpProblem": (0, 1, 2, 3), "Invalid": (None, 0, 1, 2),
          "refuse": (None, 1, 2, 3), "FieldError": (None, 1, 2, 3),
          # engine.model.Error made in code: a limit's error (web/routes.py, captchas).
          "Error": (None, 0, 1, 2),
          # A refusal an action declares (engine.Refusal), given as a field error.
          "Refusal": (None, 0, 1, 2)}
_KIND_OF_CALL = {"HttpProblem": "problem", "Invalid": "field", "refuse": "field",
                 "FieldError": "field", "Error": "limit", "Refusal": "field"}


def _text(node: ast.AST, names: dict[str, ast.AST]) -> str | None:
    """A string from the source: a literal, a module constant, or an f-string's template."""
    if isinstance(node, ast.Name) and node.id in names:
        return _text(names[node.id], names)
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        parts = []
        for value in node.values:
            if isinstance(value, ast.Constant):
                parts.append(str(value.value))
            elif isinstance(value, ast.FormattedValue):
                # Show the value's name: "{min_length}" for policy.min_length.
                parts.append("{" + ast.unparse(value.value).split(".")[-1] + "}")
        return "".join(parts)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _text(node.left, names), _text(node.right, names)
        return left + right if left is not None and right is not None else None
    return None


def _words(node: ast.AST, names: dict[str, ast.AST]) -> str | None:
    """A message: as ``_text``, or a value known only when raised (``exc.reason or ...``)."""
    found = _text(node, names)
    if found is None and isinstance(node, ast.BoolOp):
        found = next((t for t in (_text(v, names) for v in node.values) if t), None)
    return found


def _status(node: ast.AST) -> int | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return node.value
    return None


def _arguments(call: ast.Call, names: dict[str, ast.AST]) -> list[ast.AST]:
    """Positional arguments, with ``*CONSTANT_TUPLE`` spread out."""
    out: list[ast.AST] = []
    for arg in call.args:
        if isinstance(arg, ast.Starred) and isinstance(arg.value, ast.Name) and \
                isinstance(names.get(arg.value.id), ast.Tuple):
            out.extend(names[arg.value.id].elts)  # type: ignore[attr-defined]
        else:
            out.append(arg)
    return out


def _triple(elts: list[ast.AST], names: dict[str, ast.AST]) -> tuple[str, str, str] | None:
    """``(error_id, zh, en)`` when these three expressions are one."""
    if len(elts) != 3:
        return None
    eid, zh, en = _text(elts[0], names), _words(elts[1], names), _words(elts[2], names)
    if eid is None or zh is None or en is None or not ERROR_ID.match(eid) \
            or not _CJK.search(zh):
        return None
    return eid, zh, en


def _message_tables(tree: ast.Module) -> set[int]:
    """Dicts of ``{error_id: (zh, en)}``: named ``*MESSAGES``, or looked up in place."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign | ast.AnnAssign) and isinstance(node.value, ast.Dict):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and "MESSAGES" in t.id for t in targets):
                out.add(id(node.value))
        elif isinstance(node, ast.Subscript) and isinstance(node.value, ast.Dict):
            out.add(id(node.value))
    return out


def _scan(tree: ast.Module, where: str) -> Iterator[Occurrence]:
    names: dict[str, ast.AST] = {}
    assigned: set[int] = set()
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign | ast.AnnAssign) and stmt.value is not None:
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            for target in targets:
                if isinstance(target, ast.Name):
                    names[target.id] = stmt.value
                    assigned.add(id(stmt.value))
    tables = _message_tables(tree)
    for node in ast.walk(tree):
        line = f"{where}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in _CALLS:
                status_at, *at = _CALLS[name]
                args = _arguments(node, names)
                if len(args) > max(at):
                    found = _triple([args[i] for i in at], names)
                    if found:
                        status = (_status(args[status_at]) if status_at is not None
                                  else 429 if name == "Error" else 422)
                        yield Occurrence(found[0], _KIND_OF_CALL[name], status, found[1],
                                         found[2], line)
        elif isinstance(node, ast.Dict):
            keys = node.keys
            for key, value in zip(keys, node.values, strict=True):
                if key is None:
                    continue
                if isinstance(value, ast.Tuple) and len(value.elts) == 2 and id(node) in tables:
                    # A message table: {error_id: (zh, en)}
                    found = _triple([key, *value.elts], names)
                    if found:
                        yield Occurrence(found[0], "field", 422, found[1], found[2], line)
                elif isinstance(value, ast.Tuple):
                    # {status: (error_id, zh, en)}
                    found = _triple(list(value.elts), names)
                    if found:
                        yield Occurrence(found[0], "problem", _status(key), found[1],
                                         found[2], line)
            fields = {_text(k, names): v for k, v in zip(keys, node.values, strict=True)
                      if k is not None}
            eid = _text(fields["error_id"], names) if "error_id" in fields else None
            message = fields.get("message")
            if eid and ERROR_ID.match(eid) and isinstance(message, ast.Dict):
                words = {_text(k, names): _text(v, names)
                         for k, v in zip(message.keys, message.values, strict=True)
                         if k is not None}
                yield Occurrence(eid, "problem", _status(fields.get("status", ast.Pass())),
                                 words.get("zh") or "", words.get("en") or "", line)
        elif isinstance(node, ast.Tuple) and id(node) not in assigned:
            # A triple handed straight to a call, e.g. a default (id, zh, en).
            found = _triple(list(node.elts), names)
            if found and not _in_dict_value(tree, node):
                yield Occurrence(found[0], "problem", None, found[1], found[2], line)


@cache
def _dict_values(tree: ast.Module) -> frozenset[int]:
    return frozenset(id(v) for n in ast.walk(tree) if isinstance(n, ast.Dict) for v in n.values)


def _in_dict_value(tree: ast.Module, node: ast.AST) -> bool:
    return id(node) in _dict_values(tree)


def _modules(roots: Iterable[str]) -> Iterator[tuple[str, Path]]:
    """Each module of these packages (or plain modules), with its source file."""
    for name in roots:
        root = importlib.import_module(name)
        if root.__file__:
            yield name, Path(root.__file__)
        for path in getattr(root, "__path__", []):
            for info in pkgutil.walk_packages([path], prefix=f"{name}."):
                spec = importlib.util.find_spec(info.name)
                if spec is not None and spec.origin and spec.origin.endswith(".py"):
                    yield info.name, Path(spec.origin)


def _classes() -> Iterator[type[EngineError]]:
    todo = list(EngineError.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        yield cls


@cache
def code_occurrences(modules: tuple[str, ...] = ()) -> tuple[Occurrence, ...]:
    """Every error id the code can give, read from the source of the project's packages
    and of ``modules`` (those FLOW_MODULES adds)."""
    out: list[Occurrence] = []
    for name, path in sorted(set(_modules((*PACKAGES, *modules)))):
        if name == __name__:
            continue  # the advice below is about error ids, it makes none
        try:
            source = path.read_text(encoding="utf-8")
        except OSError:
            continue  # installed without its source: its classes still count
        with contextlib.suppress(ImportError):  # an optional dependency missing
            importlib.import_module(name)  # so that its error classes are known below
        where = "/".join(name.split(".")) + (".py" if path.name != "__init__.py"
                                             else "/__init__.py")
        out.extend(_scan(ast.parse(source), where))
    classes: list[type[EngineError]] = [EngineError, *_classes()]
    for cls in sorted(classes, key=lambda c: (c.__module__, c.__qualname__)):
        if "error_id" in vars(cls) and ERROR_ID.match(cls.error_id):
            out.append(Occurrence(cls.error_id, "problem", cls.status, cls.zh, cls.en,
                                  f"{cls.__module__}.{cls.__qualname__}"))
    return tuple(out)


# -- from the flows ----------------------------------------------------------------------

def flow_occurrences(flows: FlowSet) -> list[Occurrence]:
    """The error ids a flows file declares: transitions' and limits' errors."""
    out = []
    for flow in flows.flows.values():
        for lim in flow.start_limits:
            if lim.error:
                out.append(Occurrence(lim.error.error_id, "limit", 429, lim.error.zh,
                                      lim.error.en, f"{flow.name}: start limit {lim.name}"))
        for t in flow.transitions:
            dest = t.dest if t.dest is not None else "(stays)"
            where = f"{flow.name}: {'/'.join(t.sources)} --{t.trigger}--> {dest}"
            if t.error:
                out.append(Occurrence(t.error.error_id, "step", 200, t.error.zh, t.error.en,
                                      where))
            for lim in t.limits:
                if lim.error:
                    out.append(Occurrence(lim.error.error_id, "limit", 429, lim.error.zh,
                                          lim.error.en, f"{where} limit {lim.name}"))
    return out


def registry_occurrences(registry: Registry) -> list[Occurrence]:
    """The refusals actions declare (flowctl actions lists them too)."""
    return [Occurrence(r.error_id, "field", 422, r.zh, r.en,
                       f"action {name}" + (f", under {r.field}" if r.field else ""))
            for name, spec in registry.action_specs.items() for r in spec.refusals]


def catalogue(flows: FlowSet | None = None, modules: tuple[str, ...] = (),
              registry: Registry | None = None) -> dict[str, ProblemType]:
    """Every error id, by id: from the code (with ``modules``), the refusals the
    ``registry``'s actions declare, and the given flows."""
    found: dict[str, list[Occurrence]] = {}
    for o in (*code_occurrences(modules), *(flow_occurrences(flows) if flows else []),
              *(registry_occurrences(registry) if registry else [])):
        found.setdefault(o.error_id, []).append(o)
    return {eid: ProblemType(eid, tuple(found[eid]), ADVICE.get(eid) or _generic(found[eid]))
            for eid in sorted(found)}


def _generic(occurrences: list[Occurrence]) -> tuple[str, str] | None:
    """What to do about an id without advice of its own here (a flows file's, a module's
    that FLOW_MODULES adds)."""
    kind = occurrences[0].kind
    if kind == "field":
        return _FIX_FIELD
    if kind == "step":
        return ("按提示修改后再次提交；如提示需要重新开始，请重新办理。",
                "Do what the message says, then submit the step again; where it says to "
                "start again, start the procedure anew.")
    if kind == "limit":
        return ("请在 Retry-After 所示的秒数之后再试。",
                "Wait the seconds given in Retry-After (retry_after), then try again.")
    return None


def kind_text(kind: str) -> tuple[str, str]:
    return _KIND_ZH[kind], KINDS[kind]


# -- what to do ---------------------------------------------------------------------------

_AGAIN = ("请稍后再试；如果一直出现，请联系服务台并提供 request_id。",
          "Try again later; if it keeps happening, contact the service desk with the "
          "request_id.")
_FIX_FIELD = ("按字段下方的提示修改后重新提交。",
              "Correct the field as its message says and submit the step again.")
_INTERNAL = ("这是服务内部的信号，客户端不应看到；如果看到，请联系服务台并提供 request_id。",
             "An internal signal that clients should not see; if you do, contact the "
             "service desk with the request_id.")
_SANDBOX = ("仅在开发环境的沙箱页面出现：检查沙箱请求的内容。",
            "Only on the development sandbox's pages: check what was sent to the sandbox.")
_NEW_CODE = ("请重新获取验证码后再输入。", "Ask for a new code, then enter it.")
_RESTART = ("本次流程无法继续，请重新开始办理。",
            "This procedure cannot go on: start it again.")

ADVICE: dict[str, tuple[str, str]] = {
    # -- the engine
    "engine_error": _INTERNAL,
    "definition_invalid": ("流程定义文件有误：运行 flowctl lint 查看每个问题并修正。",
                           "The flows file is wrong: run flowctl lint to see every problem "
                           "and fix them."),
    "flow_not_found": ("检查流程名称：GET /api/flows 列出可以开始的流程。",
                       "Check the flow's name: GET /api/flows lists the flows that can be "
                       "started."),
    "instance_not_found": ("检查流程实例编号；实例可能已被删除，请重新开始。",
                           "Check the instance id; start a new instance if it is gone."),
    "validation_failed": ("查看 errors[]：每个字段的错误都有说明，修改后重新提交。",
                          "Read errors[]: each entry names a field and what is wrong with "
                          "it; correct them and submit again."),
    "trigger_not_allowed": ("重新读取流程（GET），按 available 或 ui.triggers 中列出的操作继续。",
                            "Read the instance again (GET) and use one of the triggers in "
                            "available or ui.triggers."),
    "transition_refused": ("条件尚未满足：按页面提示完成前面的要求后再继续。",
                           "The conditions to go on are not met yet: do what the step "
                           "asks first, then try again."),
    "flow_finished": ("该流程已结束，无需再操作；如需再次办理，请重新开始。",
                      "The procedure is finished; start a new one to do it again."),
    "flow_expired": ("使用应答中 restart 给出的请求重新开始（已填写的内容会带入）。",
                     "Start again with the request given in restart (what was entered is "
                     "carried over)."),
    "version_conflict": ("另一个请求先更新了该流程：重新读取后再提交。",
                         "Another request changed the instance first: read it again, then "
                         "submit."),
    "precondition_failed": ("If-Match 中的版本已过期：重新读取流程，使用新的 ETag。",
                            "The version in If-Match is old: read the instance again and "
                            "use its new ETag."),
    "rate_limited": ("请在 Retry-After 所示的秒数之后再试。",
                     "Wait the seconds given in Retry-After, then try again."),
    "database_unavailable": ("服务暂时无法访问数据库：请在 Retry-After 所示的秒数之后重试同一请求"
                             "（带同一 Idempotency-Key 的重试不会重复办理）。",
                             "The service cannot reach its database for now: send the same "
                             "request again after the seconds in Retry-After (with the same "
                             "Idempotency-Key a retry is never taken twice)."),
    "cache_unavailable": ("服务暂时无法访问缓存（会话、验证码、频率限制）：请在 Retry-After "
                          "所示的秒数之后重试。",
                          "The service cannot reach its cache (sessions, codes, limits) for "
                          "now: try again after the seconds in Retry-After."),
    "forbidden": ("请先以有权限的账号登录；他人的流程不能查看或操作。",
                  "Sign in with an account that may do this; another person's instance "
                  "cannot be read or stepped."),
    "idempotency_key_reused": ("每个不同的请求使用新的 Idempotency-Key。",
                               "Use a new Idempotency-Key for each different request."),
    "replay_diverged": ("历史回放与记录不一致：请运维人员运行 flowctl audit 检查。",
                        "A history does not replay to its record: operators should run "
                        "flowctl audit."),
    "duplicate": _INTERNAL,
    "cross_site_request": ("请在本网站的页面上操作；其他网站的页面不能代您提交。",
                           "Use this site's own pages: another site's page cannot act "
                           "for you."),
    # -- a request's form (engine/forms.py)
    "unknown_field": ("只提交该步骤 ui 中列出的字段。",
                      "Send only the fields the step's ui lists for this trigger."),
    "required": ("填写该字段（勾选框需勾选）后重新提交。",
                 "Fill in the field (tick the box) and submit again."),
    "not_string": ("该字段应提交文本。", "Send this field as a JSON string."),
    "not_integer": ("该字段应提交整数。", "Send a whole number."),
    "not_boolean": ("该字段应提交 true 或 false。", "Send true or false."),
    "not_choice": ("从 ui 列出的选项中选择一个值。", "Send one of the choices the ui lists."),
    "too_long": ("缩短内容，不超过 ui 中的 max_length。",
                 "Shorten the value to the max_length the ui gives."),
    "field_locked": ("该字段不可修改：按页面显示的值提交，或不提交该字段。",
                     "The field cannot be changed: send it back as shown, or leave it out."),
    # -- HTTP (web/)
    "not_found": ("检查地址；接口列表见 /api/docs。",
                  "Check the address; the API is listed at /api/docs."),
    "method_not_allowed": ("使用 Allow 头中列出的请求方法。",
                           "Use one of the methods in the Allow header."),
    "http_error": _AGAIN,
    "internal_error": _AGAIN,
    "body_too_large": ("缩小请求内容后重试。", "Send a smaller body."),
    "body_missing": ("请求需要一个 JSON 对象作为内容。", "Send a JSON object as the body."),
    "body_not_object": ("请求内容应为 JSON 对象（{...}）。",
                        "Send a JSON object ({...}), not a list or a value."),
    "malformed_json": ("检查 JSON 语法（引号、逗号、编码为 UTF-8）。",
                       "Check the JSON: quotes, commas, UTF-8."),
    "unsupported_media_type": ("设置 Content-Type: application/json。",
                               "Send Content-Type: application/json."),
    "idempotency_key_invalid": ("Idempotency-Key 使用 1-200 个可见 ASCII 字符，例如 UUID。",
                                "Use 1-200 visible ASCII characters, e.g. a UUID."),
    "if_match_invalid": ("If-Match 使用流程应答中的 ETag 值。",
                         "Send the ETag of the instance's last answer in If-Match."),
    "unknown_member": ("开始流程时只接受 prefill。", "A start takes only prefill."),
    "prefill_not_object": ("prefill 应为 {字段: 值} 形式的对象。",
                           "Send prefill as an object of field values."),
    "not_signed_in": ("请先登录。", "Sign in first."),
    # -- the OpenID Connect provider (web/oidc/)
    "authorize_request_invalid": (
        "业务系统发来的登录请求有误（未登记的系统或回调地址）：请联系该系统的管理员；"
        "系统管理员请对照 systems.yaml 检查 client_id 与 redirect_uri。",
        "The system sent an invalid sign-in request (an unregistered system or redirect "
        "URI): tell the system's administrators; they check client_id and redirect_uri "
        "against systems.yaml."),
    "authorize_request_unknown": (
        "登录请求已用过或已过期（15 分钟）：回到业务系统重新进入。",
        "The sign-in request was used or has expired (15 minutes): go back to the system "
        "and enter again."),
    "authorize_request_other_device": (
        "请在发起登录的同一浏览器中完成登录，或从业务系统重新进入。",
        "Finish signing in in the browser that started it, or enter from the system again."),
    "logout_request_invalid": (
        "业务系统发来的退出请求有误（未登记的系统或退出后回调地址，或无效的 id_token_hint）："
        "请联系该系统的管理员；系统管理员请对照 systems.yaml 检查 post_logout_redirect_uris。",
        "The system sent an invalid sign-out request (an unregistered system or "
        "post-logout redirect URI, or an id_token_hint we did not sign): tell the system's "
        "administrators; they check post_logout_redirect_uris against systems.yaml."),
    "logout_confirmation_unknown": (
        "退出确认已用过或已过期（10 分钟）：回到业务系统重新退出。",
        "The sign-out confirmation was used or has expired (10 minutes): sign out from the "
        "system again."),
    "logout_confirmation_other_session": (
        "请在发起退出的同一浏览器中确认，或从业务系统重新退出。",
        "Confirm in the browser that asked to sign out, or sign out from the system again."),
    "oidc_no_signing_key": (
        "运维人员请运行 flowctl signing-keys new 生成签名密钥。",
        "Operators: make a signing key with flowctl signing-keys new."),
    "admin_only": ("请使用后台管理员账号登录。", "Sign in as an administrator."),
    "query_invalid": ("按提示修改查询参数。", "Correct the query parameter as the message says."),
    "callback_unknown": ("回调地址只有 /api/callbacks/face 和 /api/callbacks/payment。",
                         "The callbacks are /api/callbacks/face and /api/callbacks/payment."),
    "callback_not_ready": ("稍后按 Retry-After 重发同一回调。",
                           "Send the same callback again after Retry-After."),
    "metrics_unauthorized": ("使用运维配置的指标令牌：Authorization: Bearer <METRICS_TOKEN>。",
                             "Send the metrics token the operators configured: "
                             "Authorization: Bearer <METRICS_TOKEN>."),
    "captcha_images_limit": ("请稍后再获取新的验证码图片，或重新开始办理。",
                             "Wait a while before asking for another captcha image, or "
                             "start the procedure again."),
    # -- providers (flows/providers)
    "provider_error": _AGAIN,
    "provider_unavailable": ("外部服务暂时不可用，请稍后再试（数据未改变）。",
                             "An outside service is down: try again later (nothing was "
                             "changed)."),
    "provider_timeout": ("外部服务响应超时，请稍后再试（数据未改变）。",
                         "An outside service did not answer in time: try again later "
                         "(nothing was changed)."),
    "provider_refused": ("请联系服务台：外部服务的对接配置可能有误。",
                         "Contact the service desk: the link to an outside service may be "
                         "misconfigured."),
    "provider_bad_response": _AGAIN,
    "callback_rejected": ("检查回调的签名密钥和签名方式。",
                          "Check the callback's signing secret and scheme."),
    "callback_signature_invalid": (
        "用约定的密钥以 HMAC-SHA256 对“时间戳.事件编号.内容”签名，"
        "以 v1=<hex> 放在 X-Signature 中。",
        "Sign \"{timestamp}.{event_id}.\" followed by the body with HMAC-SHA256 under the "
        "shared secret and send v1=<hex> in X-Signature."),
    "callback_stale": ("校准服务器时间，并用当前时间戳重新签名后发送。",
                       "Fix the sender's clock, sign again with the current timestamp and "
                       "send."),
    "callback_replayed": ("该事件已处理，无需重发。", "This event was applied already: do not "
                                              "send it again."),
    # -- the sandbox (development only)
    "sandbox_error": _SANDBOX,
    "sandbox_not_found": _SANDBOX,
    "sandbox_face_finished": _SANDBOX,
    "sandbox_bad_request": _SANDBOX,
    "sandbox_cross_origin": _SANDBOX,
    "limit_invalid": _SANDBOX,
    "idempotency_key_missing": _SANDBOX,
    "branch_not_found": ("在网点搜索结果中选择一个网点。", "Pick a branch from the search "
                                                "results."),
    "instance_invalid": ("instance 参数应为流程实例编号（UUID）。",
                         "The instance parameter must be a flow instance id (a UUID)."),
    # -- identity formats (flows/identity.py, flows/common.py)
    "resident_id_region": ("核对身份证号码的前6位（地区码）是否输错。",
                           "Check the first six digits (the region code) for a typo."),
    "identifier_invalid": ("填写身份证号码、手机号码或登录名之一。",
                           "Enter your ID number, mobile number or login name."),
    "text_control_chars": _FIX_FIELD,
    "login_name_invalid": ("登录名以字母开头，4-32位字母、数字或 _ . -。",
                           "A login name starts with a letter: 4-32 letters, digits, _ . -."),
    "resident_id_legacy_15": ("请填写18位的新身份证号码。", "Enter the 18-character ID number."),
    "resident_id_format": ("核对身份证号码：17位数字加1位数字或 X。",
                           "Check the ID number: 17 digits and a digit or X."),
    "resident_id_birth_date": ("核对身份证号码中的出生日期。",
                               "Check the birth date inside the ID number."),
    "resident_id_check": ("身份证号码校验位不符：逐位核对后重新输入。",
                          "The check character does not match: check each character."),
    "credit_code_length": ("统一社会信用代码为18位。", "A credit code has 18 characters."),
    "credit_code_charset": ("统一社会信用代码只含数字和大写字母（不含 I O S V Z）。",
                            "A credit code has digits and capitals only (no I, O, S, V, Z)."),
    "credit_code_check": ("统一社会信用代码校验位不符：逐位核对。",
                          "The check character does not match: check each character."),
    "mobile_invalid": ("填写11位中国大陆手机号码。", "Enter an 11-digit mainland mobile number."),
    "bank_account_format": ("账号只含数字。", "An account number has digits only."),
    "bank_account_length": ("账号长度为8-30位。", "An account number has 8-30 digits."),
    "amount_not_string": ("以文本提交金额，例如 \"0.35\"。", "Send the amount as a string, "
                                                    "e.g. \"0.35\"."),
    "amount_type": ("以文本提交金额，例如 \"0.35\"。", "Send the amount as a string, e.g. "
                                                "\"0.35\"."),
    "amount_empty": ("填写收到的金额。", "Enter the amount received."),
    "amount_negative": ("填写正数金额。", "Enter a positive amount."),
    "amount_decimals": ("金额最多两位小数。", "Use at most two decimal places."),
    "amount_too_large": ("核对对公账户流水中的金额。", "Check the amount on the statement."),
    "amount_format": ("只填数字和小数点，例如 0.35。",
                      "Use digits and a decimal point, e.g. 0.35."),
    # -- passwords (flows/passwords.py)
    "password_too_large": ("使用较短的密码。", "Choose a shorter password."),
    "password_invalid_characters": ("密码中不要使用控制字符。",
                                    "Leave control characters out of the password."),
    "password_too_short": ("加长密码。", "Choose a longer password."),
    "password_too_long": ("缩短密码。", "Choose a shorter password."),
    "password_too_few_classes": ("混合使用大写、小写字母、数字和符号中的至少三种。",
                                 "Mix at least three of: upper case, lower case, digits, "
                                 "symbols."),
    "password_equals_login_name": ("密码不要与登录名相同。",
                                   "Choose a password other than the login name."),
    "password_too_common": ("换一个不常见的密码。", "Choose a less common password."),
    "password_mismatch": ("两次输入同一个密码。", "Type the same password twice."),
    "password_unchanged": ("选择一个与原密码不同的新密码。",
                           "Choose a new password different from the old one."),
    # -- codes (flows/sms.py, flows/captcha.py)
    "sms_code_wrong": ("核对短信中的验证码后重新输入。", "Check the code in the text message and "
                                                "enter it again."),
    "sms_code_expired": _NEW_CODE,
    "sms_code_dead": _RESTART,
    "captcha_wrong": ("按新的图片重新输入字符。", "Enter the characters of the new image."),
    "captcha_expired": ("点击图片获取新的验证码后再输入。",
                        "Click the image for a new one, then enter it."),
    # -- accounts and procedures (flows/)
    "login_failed": ("核对账号、密码和图形验证码后重试；多次失败将暂时锁定。",
                     "Check the account, the password and the captcha, then try again; "
                     "repeated failures lock the account for a while."),
    "account_required": ("请先登录后再办理。", "Sign in, then start the procedure."),
    "account_kind_not_allowed": ("此项业务不适用于您的账号类型；个人中心（GET /api/me）"
                                 "列出您可以办理的业务。例如企业账号的手机号码由经办人管理，"
                                 "经办人管理只适用于企业账号。",
                                 "This procedure is not for your kind of account; the "
                                 "personal center (GET /api/me) lists the ones that are. "
                                 "For example, an organisation's numbers are its agents', "
                                 "and only organisations have agents."),
    "current_password_wrong": ("核对当前密码后重新输入；多次错误将暂时锁定登录。",
                               "Check your current password and type it again; repeated "
                               "mistakes lock the account for a while."),
    "current_password_locked": ("等待提示的时间后再试，或通过忘记密码重置。",
                                "Wait the time the message says, or reset the password."),
    "mobile_unchanged": ("填写一个新的手机号码。", "Enter a new mobile number."),
    "login_locked": ("等待提示的时间后再登录，或通过忘记密码重置。",
                     "Wait the time given, or reset the password."),
    "login_name_taken": ("换一个登录名。", "Choose another login name."),
    "resident_id_registered": ("该身份证号码已有账号：直接登录，或通过忘记密码找回。",
                               "This ID number has an account: sign in, or reset the "
                               "password."),
    "mobile_registered": ("该手机号码已有账号：直接登录，或换一个号码。",
                          "This number has an account: sign in, or use another number."),
    "credit_code_registered": ("该单位已注册：由主经办人登录，或联系服务台。",
                               "The organisation is registered: its primary agent signs in, "
                               "or contact the service desk."),
    "realname_mismatch": ("核对姓名与身份证号码是否一致。",
                          "Check that the name and the ID number belong together."),
    "account_gone": ("账号已不存在，请联系服务台。", "The account is gone: contact the service "
                                             "desk."),
    "organisation_gone": ("企业账号已不存在，请联系服务台。",
                          "The organisation's account is gone: contact the service desk."),
    # -- agent management (flows/agents.py)
    "primary_agent_required": ("由本单位的主经办人登录后办理；主经办人可将身份移交给其他经办人。",
                               "Have the organisation's primary agent sign in and do it; "
                               "the primary agent can hand the role to another agent."),
    "agent_phone_taken": ("该号码已是本单位的经办人，无需再添加；换一个号码。",
                          "This number is one of the organisation's agents already; use "
                          "another number."),
    "agent_id_taken": ("此人已是本单位的经办人，无需再添加。",
                       "This person is one of the organisation's agents already."),
    "agent_unknown": ("经办人列表已变化：重新开始办理，从新的列表中选择。",
                      "The list of agents changed: start again and choose from the new "
                      "list."),
    "agent_is_primary": ("先通过变更主经办人将身份移交给其他经办人，再删除。",
                         "Hand the primary role to another agent first (transfer_primary), "
                         "then remove."),
    "too_many_agent_checks": ("明天再添加经办人。", "Add agents again tomorrow."),
    "organisation_without_agent": ("联系服务台为该单位添加经办人。",
                                   "Contact the service desk to add an agent."),
    "agent_gone": ("重新登录并选择当前的经办人。", "Sign in again and pick a current agent."),
    "login_name_not_agent_org": ("填写该手机号码担任经办人的单位的登录名。",
                                 "Enter the login name of an organisation this number is an "
                                 "agent of."),
    "organisation_account_required": ("以企业（法人）账号登录后再进行企业认证。",
                                      "Sign in with the organisation's account first."),
    "organisation_already_verified": ("该企业已认证，无需再次认证。",
                                      "The organisation is verified already."),
    "organisation_not_found": ("核对统一社会信用代码。", "Check the credit code."),
    "account_not_found": ("核对登录名。", "Check the login name."),
    "reason_required": ("填写办理原因（如工单号）。", "Give the reason (e.g. the ticket "
                                                "number)."),
    "branch_unknown": ("输入网点名称的一部分搜索，并从列表中选择。",
                       "Type part of the branch name and pick it from the list."),
    "deposit_not_current": _INTERNAL,
    "deposit_not_credited": ("打款到账后再填写金额。", "Wait for the deposit to arrive, then "
                                                "enter the amount."),
    "face_session_not_current": ("这是已被新的刷脸会话取代的旧会话的结果：提供方无需重发。",
                                 "The result is for a face session a newer one replaced: "
                                 "the provider need not send it again."),
    "certification_change_pending": ("先在原流程中完成重新认证或撤回变更"
                                     "（个人中心显示待认证的变更），再发起新的变更。",
                                     "Finish the re-verification of the pending change, or "
                                     "withdraw it (the personal center shows it), then start "
                                     "a new one."),
    "certification_unchanged": ("修改至少一项认证信息后再提交。",
                                "Change at least one item before submitting."),
    "sms_code_required": ("点击获取验证码，填写发送到新联系电话的验证码。",
                          "Send a code, then enter the code the new contact phone received."),
    # -- passwords (flows/passwords.py)
    "server_busy": ("请在 Retry-After 所示的秒数之后再试；服务器正忙于核验其他人的密码。",
                    "Wait the seconds given in Retry-After, then try again: the server is "
                    "busy checking other people's passwords and refused at once rather "
                    "than keep you waiting."),
    # -- seals (flows/seals.py, flows/sealart.py, web/seals.py)
    "seal_fonts_missing": ("稍后再试；运维人员需安装 fonts-noto-cjk 字体包。",
                           "Try again later; the operator installs the fonts-noto-cjk "
                           "package."),
    "seal_name_unfit": ("个人印章需为2至4个字的姓名，单位名称不超过40个字；如需帮助请联系服务台。",
                        "A personal seal takes a name of 2-4 characters, a round one at "
                        "most 40; contact the service desk for help."),
    "seal_limit_reached": ("删除一枚不再使用的印章，或修改现有印章的样式。",
                           "Delete a seal you no longer use, or change an existing seal's "
                           "style."),
    "no_seal": ("先通过“创建电子印章”创建一枚印章。", "Create a seal first (create_seal)."),
    "seal_glyph_missing": ("换一种字体，或去掉提示中的字。",
                           "Pick another font, or leave out the characters named."),
    "seal_duplicate": ("修改样式（如内文、尺寸或颜色），使其与已有印章不同。",
                       "Change the style (inner text, size or colour) so that it differs "
                       "from the seal you have."),
    "seal_gone": ("该印章已被删除：重新开始办理并选择现有的印章。",
                  "The seal was deleted: start again and pick a seal you have."),
    "seal_style_unchanged": ("修改至少一项样式后再保存。",
                             "Change at least one part of the style, then save."),
    "seal_style_invalid": ("从表单列出的选项中选择尺寸、边框宽度和字体。",
                           "Pick the size, the rim width and the font from the form's "
                           "choices."),
    "seal_colour_invalid": ("填写 red、dark_red、blue、black，或 #rrggbb 形式的颜色。",
                            "Enter red, dark_red, blue, black, or a colour as #rrggbb."),
    "seal_code_invalid": ("只填写数字（最多20位），或留空。",
                          "Enter digits only (at most 20), or leave it empty."),
    "seal_not_found": ("核对印章地址；只能查看自己账号的印章。",
                       "Check the seal's address; only the account's own seals are "
                       "shown."),
    # -- declared in flows.yaml
    "realname_checks_id_limit": ("该身份证号码今日的实名核验次数已用完，请明天再试。",
                                 "This ID number has had its real-name checks for today; "
                                 "try again tomorrow."),
    "too_many_registration_checks": ("请稍后再试；如需要，请重新开始办理。",
                                     "Wait a while and try again; start the procedure "
                                     "again if need be."),
    "too_many_certification_checks": ("明天再提交变更，或联系服务台。",
                                      "Submit the change again tomorrow, or contact the "
                                      "service desk."),
    "too_many_starts": ("请在 Retry-After 所示的时间后再开始办理。",
                        "Wait the seconds in Retry-After before starting again."),
    "sms_resend_too_soon": ("等待60秒后再获取验证码。", "Wait 60 seconds before asking for "
                                                   "another code."),
    "sms_daily_limit": ("明天再获取验证码，或联系服务台。",
                        "Ask for a code again tomorrow, or contact the service desk."),
    "sms_client_limit": ("明天再试。", "Try again tomorrow."),
    "face_failed": ("点击重新识别再扫一次，或返回修改信息。",
                    "Try again, or go back and correct the information."),
    "face_sessions_used_up": ("刷脸次数已用完：选择对公账户打款认证，或重新办理。",
                              "No face attempts are left: choose the deposit, or start "
                              "again."),
    "deposit_daily_limit": ("明天再发起打款认证。", "Start another deposit tomorrow."),
    "deposit_amount_wrong": ("核对对公账户流水中的到账金额后重新填写。",
                             "Check the credited amount on the statement and enter it again."),
    "deposit_tries_used_up": ("重新选择认证方式。", "Choose a method again."),
    "deposit_expired": ("打款已过期：重新选择认证方式。", "The deposit expired: choose a method "
                                                   "again."),
}
