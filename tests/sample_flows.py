"""Flows of the tests' own, with their guards, actions and validators."""

from __future__ import annotations

from typing import Any

from engine import ActionInput, GuardInput, Invalid, OutboxMessage, Registry

SENT: list[OutboxMessage] = []

SAMPLE_YAML = """\
flows:
  signup:
    title: {zh: 测试注册, en: Test sign-up}
    expires_in: 7d
    initial: details
    states:
      details:
        label: {zh: 基本信息, en: Details}
        fields:
          name:
            type: string
            required: true
            format: nonempty
            label: {zh: 姓名, en: Name}
          password:
            type: string
            required: true
            secret: true
            label: {zh: 密码, en: Password}
          agree:
            type: boolean
            required: true
            label: {zh: 同意协议, en: I agree}
      code:
        label: {zh: 验证码, en: Code}
        fields:
          code:
            type: string
            required: true
            secret: true
            label: {zh: 验证码, en: Code}
        timeout: {after: 72h, trigger: expire}
      done:
        final: true
      lapsed:
        final: true
    transitions:
      - trigger: submit
        source: details
        dest: code
        actions: [note_password, send_code]
      - trigger: confirm
        source: code
        dest: done
        guards: [code_ok]
        actions: [check_code]
      - trigger: confirm
        source: code
        dest: code
        guards: ["!code_ok", "!too_many"]
        actions: [check_code]
        error: {id: code_wrong, field: code, zh: 验证码错误, en: The code is wrong}
      - trigger: confirm
        source: code
        dest: details
        guards: ["!code_ok", too_many]
        actions: [check_code]
        error: {id: code_dead, zh: 错误次数过多，请重新开始, en: Too many wrong codes; start again}
      - trigger: back
        source: code
        dest: details
        fields: []
      - trigger: expire
        source: code
        dest: lapsed
"""


def register(registry: Registry) -> None:
    @registry.validator("nonempty")
    def nonempty(value: Any) -> Any:
        if isinstance(value, str) and value.strip() == "bad":
            raise Invalid("name_bad", "名字不可用", "This name cannot be used")
        return value

    @registry.action("note_password")
    async def note_password(a: ActionInput) -> dict[str, Any]:
        # A fact derived from a secret, never the secret itself.
        return {"length": len(a.input["password"])}

    @registry.action("send_code")
    async def send_code(a: ActionInput) -> dict[str, Any]:
        a.emit("sms", {"to": a.input["name"], "template": "code"})
        return {"sent": True}

    @registry.action("check_code")
    async def check_code(a: ActionInput) -> dict[str, Any]:
        return {"ok": a.input.get("code") == "123456"}

    @registry.guard("code_ok")
    def code_ok(g: GuardInput) -> bool:
        return bool(g.facts.get("check_code", {}).get("ok"))

    @registry.guard("too_many")
    def too_many(g: GuardInput) -> bool:
        return g.attempts >= 2

    @registry.sender("sms")
    async def sms(message: OutboxMessage) -> None:
        SENT.append(message)


def sample_registry() -> Registry:
    registry = Registry()
    register(registry)
    return registry
