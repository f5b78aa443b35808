"""Building blocks every flow may use: plain text and login-name formats, the log sender."""

from __future__ import annotations

import re
import unicodedata
from typing import Any

import structlog

from engine import GuardInput, Invalid, OutboxMessage, Param, Registry

log = structlog.get_logger("flows.common")

_LOGIN_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{3,31}$")


def text(value: Any) -> Any:
    """Refuse control characters; normalise to NFC so equal text compares equal."""
    if isinstance(value, str):
        if any(unicodedata.category(ch) == "Cc" for ch in value):
            raise Invalid("text_control_chars", "不能包含控制字符",
                          "Control characters are not allowed")
        return unicodedata.normalize("NFC", value)
    return value


def login_name(value: Any) -> Any:
    """A login name: a letter, then 3-31 letters, digits, '_', '.', '-'."""
    if not isinstance(value, str) or not _LOGIN_NAME.match(value):
        raise Invalid("login_name_invalid", "登录名须以字母开头，4-32位字母、数字或 _ . -",
                      "A login name starts with a letter and has 4-32 letters, digits, _ . -")
    return value


AGREE = Param("field", "field", "The tick box that says the agreement was read.",
              default="agree", scope="flow")


def agreed(g: GuardInput) -> bool:
    """The agreement box (parameter ``field``) is ticked in this step's input or earlier."""
    return g.values.get(g.params["field"]) is True


async def log_sender(message: OutboxMessage) -> None:
    """Deliver a message to the log: the development stand-in for real channels."""
    log.info("outbox_delivered", topic=message.topic, message_id=message.id,
             idempotency_key=message.idempotency_key)


def register(registry: Registry) -> None:
    registry.validator("text")(text)
    registry.validator("login_name")(login_name)
    registry.guard("agreed", params=[AGREE])(agreed)
    registry.sender("log")(log_sender)
