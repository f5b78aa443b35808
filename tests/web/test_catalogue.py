"""The catalogue of error ids: found wherever the code makes one, each with what to do."""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

from engine import Registry, load_file
from web.catalogue import (
    ADVICE,
    _scan,
    catalogue,
    code_occurrences,
    flow_occurrences,
    registry_occurrences,
)

ROOT = Path(__file__).resolve().parents[2]


def ids(source: str) -> dict[str, tuple[str, int | None, str, str]]:
    found = _scan(ast.parse(textwrap.dedent(source)), "m.py")
    return {o.error_id: (o.kind, o.status, o.zh, o.en) for o in found}


def test_the_scanner_finds_an_error_id_in_every_form_the_code_writes_one() -> None:
    found = ids('''
        WRONG = "code_wrong"
        FAILED = ("login_failed", "登录失败", "Sign-in failed")
        MESSAGES = {WRONG: ("验证码错误", "Wrong code"), "code_dead": ("验证码已失效", "Dead")}
        LABELS = {"sms": ("短信", "SMS")}

        def f(limit):
            raise HttpProblem(413, "body_too_large", "过大", f"Larger than {limit} bytes")
            raise Invalid("mobile_invalid", "手机号码不正确", "Not a mobile number")
            refuse("name", "realname_mismatch", "姓名不匹配", "Name and ID differ")
            refuse(None, *FAILED)
            x = FieldError("login_name", "login_name_taken", "已被使用", "Taken")
            zh, en = {"amount_empty": ("请填写金额", "Enter an amount")}[key]
            code = _HTTP.get(status, ("http_error", "请求无法处理", exc.reason or "HTTP error"))
            return {"status": 500, "error_id": "internal_error",
                    "message": {"zh": "内部错误", "en": "Internal error"}}
        _HTTP = {404: ("not_found", "没有这个地址", "No such address")}
    ''')
    assert found == {
        "body_too_large": ("problem", 413, "过大", "Larger than {limit} bytes"),
        "mobile_invalid": ("field", 422, "手机号码不正确", "Not a mobile number"),
        "realname_mismatch": ("field", 422, "姓名不匹配", "Name and ID differ"),
        "login_failed": ("field", 422, "登录失败", "Sign-in failed"),
        "login_name_taken": ("field", 422, "已被使用", "Taken"),
        "code_wrong": ("field", 422, "验证码错误", "Wrong code"),
        "code_dead": ("field", 422, "验证码已失效", "Dead"),
        "amount_empty": ("field", 422, "请填写金额", "Enter an amount"),
        "http_error": ("problem", None, "请求无法处理", "HTTP error"),
        "internal_error": ("problem", 500, "内部错误", "Internal error"),
        "not_found": ("problem", 404, "没有这个地址", "No such address"),
    }  # and not the labels table's "sms"


def test_error_classes_are_found_with_their_status_and_messages() -> None:
    by_id = {o.error_id: o for o in code_occurrences() if o.where.startswith(
        ("engine.", "flows."))}
    assert (by_id["flow_expired"].status, by_id["flow_expired"].en) == (
        410, "The flow has expired; start a new one")
    assert by_id["provider_timeout"].status == 503
    assert by_id["callback_replayed"].status == 409


def test_every_error_id_of_the_code_and_of_flows_yaml_has_advice_and_no_advice_is_stale(
) -> None:
    registry = Registry().load_modules(["flows"])
    flows = load_file(str(ROOT / "flows.yaml"), registry)
    known = {o.error_id for o in code_occurrences()} | {
        o.error_id for o in flow_occurrences(flows)} | {
        o.error_id for o in registry_occurrences(registry)}
    missing = sorted(known - ADVICE.keys())
    assert missing == [], f"write what to do about these in web/catalogue.py ADVICE: {missing}"
    assert sorted(ADVICE.keys() - known) == [], "advice for error ids nothing gives any more"
    pages = catalogue(flows, registry=registry)
    assert pages.keys() == known
    for page in pages.values():
        assert page.todo is not None
        assert all(o.zh and o.en for o in page.occurrences), page.error_id


def test_an_error_id_a_reloaded_file_declares_gets_a_page_with_general_advice() -> None:
    text = (ROOT / "docs" / "example-flows.yaml").read_text(encoding="utf-8")
    flows = load_file(str(ROOT / "docs" / "example-flows.yaml"),
                      Registry().load_modules(["flows"]))
    assert "callback_number_limit" in text
    page = catalogue(flows)["callback_number_limit"]
    assert page.status == 429
    assert page.todo is not None
    assert "Retry-After" in page.todo[1]
    assert catalogue(flows)["agreement_required"].occurrences[0].kind == "step"
