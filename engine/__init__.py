"""The flow engine: definitions, the step, timers and replay. Pure: no I/O of its own."""

from engine.canonical import instance_ref
from engine.durations import format_duration, parse_duration
from engine.errors import (
    ConcurrencyConflict,
    DefinitionError,
    DuplicateKey,
    EngineError,
    FieldError,
    FlowExpired,
    FlowFinished,
    FlowNotFound,
    Forbidden,
    IdempotencyKeyReused,
    InstanceNotFound,
    PreconditionFailed,
    RateLimited,
    ReplayDivergence,
    TransitionRefused,
    TriggerNotAllowed,
    ValidationFailed,
    VersionConflict,
)
from engine.forms import Invalid
from engine.loader import Diagnostic, FlowSet, check_text, load_file, load_text
from engine.machine import CompiledFlow
from engine.memory import MemoryStore, MemoryTransaction
from engine.model import Flow
from engine.ports import Clock, FrozenClock, NewTimer, StepCommit, Store, SystemClock, Timer
from engine.registry import Param, Refusal, Registry
from engine.replay import ReplayReport, ReplayResult, export_lines, replay, replay_export
from engine.runtime import Runtime, StepOutcome
from engine.values import ActionInput, Event, GuardInput, Instance, OutboxMessage
from engine.workers import OutboxDispatcher, TimerWorker

__all__ = [
    "ActionInput",
    "Clock",
    "CompiledFlow",
    "ConcurrencyConflict",
    "DefinitionError",
    "Diagnostic",
    "DuplicateKey",
    "EngineError",
    "Event",
    "FieldError",
    "Flow",
    "FlowExpired",
    "FlowFinished",
    "FlowNotFound",
    "FlowSet",
    "Forbidden",
    "FrozenClock",
    "GuardInput",
    "IdempotencyKeyReused",
    "Instance",
    "InstanceNotFound",
    "Invalid",
    "MemoryStore",
    "MemoryTransaction",
    "NewTimer",
    "OutboxDispatcher",
    "OutboxMessage",
    "Param",
    "PreconditionFailed",
    "RateLimited",
    "Refusal",
    "Registry",
    "ReplayDivergence",
    "ReplayReport",
    "ReplayResult",
    "Runtime",
    "StepCommit",
    "StepOutcome",
    "Store",
    "SystemClock",
    "Timer",
    "TimerWorker",
    "TransitionRefused",
    "TriggerNotAllowed",
    "ValidationFailed",
    "VersionConflict",
    "check_text",
    "export_lines",
    "format_duration",
    "instance_ref",
    "load_file",
    "load_text",
    "parse_duration",
    "replay",
    "replay_export",
]
