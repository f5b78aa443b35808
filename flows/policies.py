"""The policy sections of flows.yaml and their parsers (checked by `flowctl lint`)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import attrs

from engine import Registry, parse_duration
from flows.passwords import PasswordPolicy
from flows.sms import SmsPolicy


def _known(mapping: Mapping[str, Any] | None, keys: set[str], what: str) -> Mapping[str, Any]:
    if mapping is None:
        return {}
    if not isinstance(mapping, Mapping):
        raise ValueError(f"{what} must be a mapping")
    unknown = sorted(set(mapping) - keys)
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(keys))})")
    return mapping


def _count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive whole number")
    return value


@attrs.frozen
class LockoutPolicy:
    """Repeated failed sign-ins lock the account for a while (SPEC: 5 in 15 min -> 15 min),
    whatever identifier and spelling they used (flows/signin.py)."""

    max_failures: int = 5
    window: timedelta = timedelta(minutes=15)
    lock: timedelta = timedelta(minutes=15)

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any] | None) -> LockoutPolicy:
        m = _known(mapping, {"max_failures", "window", "lock"}, "login_lockout")
        default = cls()
        return cls(max_failures=_count(m.get("max_failures", default.max_failures),
                                       "max_failures"),
                   window=parse_duration(m["window"]) if "window" in m else default.window,
                   lock=parse_duration(m["lock"]) if "lock" in m else default.lock)


@attrs.frozen
class AttemptsPolicy:
    """How many face sessions a flow may open, how many deposit amounts may be tried."""

    face_sessions: int = 3
    deposit_tries: int = 3

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any] | None) -> AttemptsPolicy:
        m = _known(mapping, {"face_sessions", "deposit_tries"}, "attempts")
        default = cls()
        return cls(face_sessions=_count(m.get("face_sessions", default.face_sessions),
                                        "face_sessions"),
                   deposit_tries=_count(m.get("deposit_tries", default.deposit_tries),
                                        "deposit_tries"))


def register(registry: Registry) -> None:
    registry.policy("password")(PasswordPolicy.from_mapping)
    registry.policy("sms")(SmsPolicy.from_mapping)
    registry.policy("login_lockout")(LockoutPolicy.from_mapping)
    registry.policy("attempts")(AttemptsPolicy.from_mapping)
