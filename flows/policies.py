"""The policy sections of flows.yaml and their parsers (checked by `flowctl lint`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any, TypeVar

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


P = TypeVar("P")

# Parsed policies, by class and section. Guards parse their policies at every step, and
# an audit at every event it replays, always the same few sections of the pinned
# definitions: each parsed once. Only a dict of plain values is kept, as YAML gives
# them: strings and whole numbers, no bools (True == 1 would find the parse of 1),
# so equal keys are equal sections; the policies are frozen, safe to share.
_PARSED: dict[tuple[type[Any], tuple[tuple[str, str | int], ...] | None], Any] = {}
_PARSED_MAX = 512


def _once(cls: type[P], parse: Callable[[Mapping[str, Any] | None], P],
          mapping: Mapping[str, Any] | None) -> P:
    """``parse(mapping)``, parsed once per class and section of plain values."""
    if mapping is None:
        key = None
    elif type(mapping) is dict and all(type(k) is str and type(v) in (str, int)
                                       for k, v in mapping.items()):
        key = tuple(mapping.items())
    else:
        return parse(mapping)
    found: P | None = _PARSED.get((cls, key))
    if found is None:
        found = parse(mapping)  # a section it refuses raises and is not kept
        if len(_PARSED) < _PARSED_MAX:
            _PARSED[cls, key] = found
    return found


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
        return _once(cls, cls._parse, mapping)

    @classmethod
    def _parse(cls, mapping: Mapping[str, Any] | None) -> LockoutPolicy:
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
        return _once(cls, cls._parse, mapping)

    @classmethod
    def _parse(cls, mapping: Mapping[str, Any] | None) -> AttemptsPolicy:
        m = _known(mapping, {"face_sessions", "deposit_tries"}, "attempts")
        default = cls()
        return cls(face_sessions=_count(m.get("face_sessions", default.face_sessions),
                                        "face_sessions"),
                   deposit_tries=_count(m.get("deposit_tries", default.deposit_tries),
                                        "deposit_tries"))


def _duration(m: Mapping[str, Any], key: str, default: timedelta) -> timedelta:
    return parse_duration(m[key]) if key in m else default


@attrs.frozen
class FaceSkipPolicy:
    """How long an earlier face pass lets the same owner skip the face step (SPEC 1.2)."""

    within: timedelta = timedelta(days=1)

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any] | None) -> FaceSkipPolicy:
        return _once(cls, cls._parse, mapping)

    @classmethod
    def _parse(cls, mapping: Mapping[str, Any] | None) -> FaceSkipPolicy:
        m = _known(mapping, {"within"}, "face_skip")
        return cls(within=_duration(m, "within", cls().within))


@attrs.frozen
class FaceSessionsPolicy:
    """How many face sessions one person may have opened in a window, in all procedures."""

    per_person: int = 5
    within: timedelta = timedelta(days=1)

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any] | None) -> FaceSessionsPolicy:
        return _once(cls, cls._parse, mapping)

    @classmethod
    def _parse(cls, mapping: Mapping[str, Any] | None) -> FaceSessionsPolicy:
        m = _known(mapping, {"per_person", "within"}, "face_sessions")
        default = cls()
        return cls(per_person=_count(m.get("per_person", default.per_person), "per_person"),
                   within=_duration(m, "within", default.within))


@attrs.frozen
class CaptchaPolicy:
    """How many captcha images one flow instance, and one client, may fetch in a window.

    Every image costs a render and answers one guess; without a cap a solver fetches
    as many as it likes.
    """

    per_instance: int = 20
    per_client: int = 600
    window: timedelta = timedelta(minutes=10)

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any] | None) -> CaptchaPolicy:
        return _once(cls, cls._parse, mapping)

    @classmethod
    def _parse(cls, mapping: Mapping[str, Any] | None) -> CaptchaPolicy:
        m = _known(mapping, {"per_instance", "per_client", "window"}, "captcha")
        default = cls()
        return cls(per_instance=_count(m.get("per_instance", default.per_instance),
                                       "per_instance"),
                   per_client=_count(m.get("per_client", default.per_client), "per_client"),
                   window=_duration(m, "window", default.window))


def register(registry: Registry) -> None:
    registry.policy("password")(PasswordPolicy.from_mapping)
    registry.policy("sms")(SmsPolicy.from_mapping)
    registry.policy("login_lockout")(LockoutPolicy.from_mapping)
    registry.policy("attempts")(AttemptsPolicy.from_mapping)
    registry.policy("captcha")(CaptchaPolicy.from_mapping)
    registry.policy("face_skip")(FaceSkipPolicy.from_mapping)
    registry.policy("face_sessions")(FaceSessionsPolicy.from_mapping)
