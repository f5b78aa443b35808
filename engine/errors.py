"""The engine's exceptions: one root, each also the matching built-in.

Every error that can reach a client carries a stable ``error_id``, an HTTP status and a
message in Chinese and English; the web layer turns them into problem+json.
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs


@attrs.frozen
class FieldError:
    """One field's problem, as shown under that field; ``field`` None: the step's own
    (shown above the form), never one field's."""

    field: str | None
    error_id: str
    zh: str
    en: str

    def as_dict(self) -> dict[str, str | None]:
        return {"field": self.field, "error_id": self.error_id, "zh": self.zh, "en": self.en}


class EngineError(Exception):
    """Root of everything the engine raises on purpose."""

    status: ClassVar[int] = 500
    error_id: ClassVar[str] = "engine_error"
    zh: ClassVar[str] = "流程引擎错误"
    en: ClassVar[str] = "Flow engine error"

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        super().__init__(detail or self.en)
        self.detail = detail
        self.extra = extra

    def problem(self) -> dict[str, Any]:
        """Return the problem+json body for this error (without type/instance)."""
        body: dict[str, Any] = {
            "status": self.status,
            "error_id": self.error_id,
            "title": self.en,
            "message": {"zh": self.zh, "en": self.en},
        }
        if self.detail:
            body["detail"] = self.detail
        body.update(self.extra)
        return body


class DefinitionError(EngineError, ValueError):
    """A flows file that does not load or does not lint."""

    error_id = "definition_invalid"
    zh = "流程定义无效"
    en = "The flow definition is invalid"

    def __init__(self, diagnostics: list[Any]) -> None:
        self.diagnostics = diagnostics
        super().__init__("\n".join(str(d) for d in diagnostics))


class FlowNotFound(EngineError, LookupError):
    status = 404
    error_id = "flow_not_found"
    zh = "没有这个流程"
    en = "No such flow"


class InstanceNotFound(EngineError, LookupError):
    status = 404
    error_id = "instance_not_found"
    zh = "没有这个流程实例"
    en = "No such flow instance"


class ValidationFailed(EngineError, ValueError):
    status = 422
    error_id = "validation_failed"
    zh = "提交的内容有误，请按提示修改"
    en = "Some fields are not valid; see the errors"

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__(None, errors=[e.as_dict() for e in errors])
        self.errors = errors


class TriggerNotAllowed(EngineError, LookupError):
    status = 409
    error_id = "trigger_not_allowed"
    zh = "当前步骤不能进行此操作"
    en = "This action is not available on the current step"


class TransitionRefused(EngineError, ValueError):
    status = 422
    error_id = "transition_refused"
    zh = "条件不满足，无法继续"
    en = "The conditions to continue are not met"


class FlowFinished(EngineError, RuntimeError):
    status = 409
    error_id = "flow_finished"
    zh = "流程已结束"
    en = "The flow has already finished"


class FlowExpired(EngineError, RuntimeError):
    status = 410
    error_id = "flow_expired"
    zh = "流程已过期，请重新开始"
    en = "The flow has expired; start a new one"


class VersionConflict(EngineError, RuntimeError):
    """Another step committed first (optimistic concurrency)."""

    status = 409
    error_id = "version_conflict"
    zh = "该步骤已被其他请求更新，请刷新后重试"
    en = "Another request changed this flow first; reload and try again"


class PreconditionFailed(EngineError, RuntimeError):
    """``If-Match`` named a version that is no longer current."""

    status = 412
    error_id = "precondition_failed"
    zh = "流程版本已变化，请刷新后重试"
    en = "The flow is no longer at the version given in If-Match"


class RateLimited(EngineError, RuntimeError):
    """A limit declared in flows.yaml is used up; ``retry_after`` says for how long."""

    status = 429
    error_id = "rate_limited"
    zh = "操作过于频繁，请稍后再试"
    en = "Too many attempts; try again later"


class Forbidden(EngineError, PermissionError):
    status = 403
    error_id = "forbidden"
    zh = "无权进行此操作"
    en = "You may not do this"


class IdempotencyKeyReused(EngineError, ValueError):
    status = 422
    error_id = "idempotency_key_reused"
    zh = "幂等键已用于另一个操作"
    en = "This Idempotency-Key was already used for a different request"


class ReplayDivergence(EngineError, AssertionError):
    """Replay of a history did not reproduce what was recorded."""

    error_id = "replay_diverged"
    zh = "历史回放与记录不一致"
    en = "Replaying the history did not reproduce the record"

    def __init__(self, seq: int, what: str, expected: Any, found: Any) -> None:
        self.seq = seq
        self.what = what
        self.expected = expected
        self.found = found
        super().__init__(f"seq {seq}: {what}: expected {expected!r}, found {found!r}")


class ConcurrencyConflict(VersionConflict):
    """Raised by a store when the version-checked update matched no row."""


class DuplicateKey(EngineError, RuntimeError):
    """Raised by a store when a unique key (idempotency, start key) already exists."""

    status = 409
    error_id = "duplicate"
