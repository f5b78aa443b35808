"""Any sequence of steps on the real Runtime over MemoryStore: replay always equals live.

tests/engine/test_stateful.py walks the same kind of sequences on PostgreSQL, a few dozen
of them. With no server to wait for, this one walks hundreds in seconds, with more of
what can happen: owners and strangers, providers' callbacks, repeated timeouts, keys sent
again, twenty requests at once, clocks moved past deadlines, an outbox that fails.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    multiple,
    rule,
)

from engine import (
    ActionInput,
    EngineError,
    Event,
    Forbidden,
    FrozenClock,
    GuardInput,
    IdempotencyKeyReused,
    MemoryStore,
    OutboxDispatcher,
    OutboxMessage,
    Registry,
    Runtime,
    StepOutcome,
    Timer,
    load_text,
    replay,
)
from engine.replay import compare_live
from tests.sample_flows import SAMPLE_YAML, register

# A second flow beside the sample's signup: only accounts start it, a provider's callback
# decides it, its timeout loops back and re-arms, and its start already queues a message.
TICKET_YAML = """\
  ticket:
    title: {zh: 工单, en: Ticket}
    access: account
    expires_in: 5h
    initial: waiting
    states:
      waiting:
        label: {zh: 等待结果, en: Waiting}
        on_enter: [open_ticket]
        fields:
          outcome:
            type: choice
            choices: [pass, fail]
            required: true
            label: {zh: 结果, en: Outcome}
          note:
            type: string
            label: {zh: 备注, en: Note}
        timeout: {after: 1h, trigger: poll}
      done:
        final: true
      closed:
        final: true
    transitions:
      - trigger: poll
        source: waiting
        dest: waiting
        actions: [count_poll]
      - trigger: result
        source: waiting
        dest: done
        via: callback
        fields: [outcome]
        guards: [passed]
      - trigger: result
        source: waiting
        dest: waiting
        via: callback
        fields: [outcome]
        guards: ["!passed"]
        error: {id: not_passed, zh: 未通过, en: Not passed}
      - trigger: nudge
        source: waiting
        dest: waiting
        fields: [note]
      - trigger: close
        source: waiting
        dest: closed
        fields: []
"""

PROVIDER = "provider:test"
ACTORS = ["anonymous", "account:1", "account:2"]
TRIGGERS = ["submit", "confirm", "back", "expire", "start", "nope", "poll", "result",
            "nudge", "close"]
INPUTS = st.one_of(
    st.just({"name": "Ada", "password": "pw-Secret-1", "agree": True}),
    st.just({"code": "123456"}),
    st.just({"code": "000000"}),
    st.just({"outcome": "pass"}),
    st.just({"outcome": "fail"}),
    st.just({"note": "please"}),
    st.just({}),
    st.dictionaries(st.sampled_from(["name", "code", "agree", "password", "outcome", "x"]),
                    st.one_of(st.text(max_size=8), st.booleans(), st.integers(), st.none()),
                    max_size=4),
)
KEYS = st.none() | st.sampled_from(["a", "b"])
TALLY: Counter[str] = Counter()


def ticket_registry() -> Registry:
    registry = Registry()
    register(registry)

    @registry.action("open_ticket")
    async def open_ticket(a: ActionInput) -> dict[str, Any]:
        a.emit("ticket", {"owner": a.owner})
        return {"opened": True}

    @registry.action("count_poll")
    async def count_poll(a: ActionInput) -> dict[str, Any]:
        return {"polls": int(a.context.get("facts", {}).get("count_poll", {}).get("polls", 0))
                + 1}

    @registry.guard("passed")
    def passed(g: GuardInput) -> bool:
        return g.input.get("outcome") == "pass"

    @registry.sender("ticket")
    async def send(message: OutboxMessage) -> None:
        # Every other message needs a second try: retries and leases are exercised too.
        if message.seq % 2 == 0 and message.attempts < 2:
            raise ConnectionError("gateway busy")
        DELIVERED.append(message.idempotency_key)

    return registry


DELIVERED: list[str] = []
REGISTRY = ticket_registry()
FLOWS = load_text(SAMPLE_YAML + TICKET_YAML, registry=REGISTRY)


class MemorySteps(RuleBasedStateMachine):
    instances = Bundle("instances")

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.clock = FrozenClock(datetime(2026, 5, 1, tzinfo=UTC))
        self.store = MemoryStore(self.clock)
        self.runtime = Runtime(self.store, self.clock, REGISTRY, FLOWS)
        self.run(self.runtime.publish())
        self.outbox = OutboxDispatcher(self.store, self.clock, REGISTRY, max_attempts=3)
        self.owner: dict[str, str] = {}
        self.starts: dict[tuple[str, str], tuple[str, str]] = {}  # (actor, key) -> flow, id
        self.sent: dict[tuple[str, str, str], Event] = {}  # (instance, actor, key) -> event
        self.fired: list[Timer] = []
        DELIVERED.clear()

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    # -- starting ---------------------------------------------------------------------
    @initialize(target=instances, interleave=st.booleans())
    def first(self, interleave: bool) -> Any:
        # Store calls that yield, as round trips do, or never: concurrent steps interleave.
        self.store.interleave = interleave
        return self.start("signup", "anonymous", None)

    def attempt(self, coro: Any) -> StepOutcome | EngineError:
        """A step's outcome, or the refusal it got."""
        try:
            return self.run(coro)  # type: ignore[no-any-return]
        except EngineError as exc:
            return exc

    @rule(target=instances, flow=st.sampled_from(["signup", "ticket"]),
          actor=st.sampled_from(ACTORS), key=KEYS)
    def start(self, flow: str, actor: str, key: str | None) -> Any:
        earlier = self.starts.get((actor, key)) if key else None
        outcome = self.attempt(self.runtime.start(flow, actor=actor, idempotency_key=key))
        if isinstance(outcome, Forbidden):
            TALLY["start:forbidden"] += 1
            assert flow == "ticket"
            assert not actor.startswith("account:")
            return multiple()
        if isinstance(outcome, EngineError):
            TALLY["start:" + outcome.error_id] += 1
            # A key is the sender's own, and names one start: of one flow.
            assert isinstance(outcome, IdempotencyKeyReused), outcome
            assert earlier is not None
            assert earlier[0] != flow
            return multiple()
        iid = outcome.instance.id
        # A start sent again is the first one's answer; another sender's key starts anew.
        assert outcome.replayed == (earlier is not None), (earlier, outcome)
        if earlier is not None:
            assert (flow, iid) == earlier
            assert outcome.event.seq == 1
            return multiple()
        TALLY["started"] += 1
        self.owner[iid] = actor
        if key:
            self.starts[(actor, key)] = (flow, iid)
        self.check(iid)
        return iid

    # -- stepping ---------------------------------------------------------------------
    @rule(iid=instances, who=st.sampled_from(["owner", "owner", "owner", PROVIDER, *ACTORS]),
          trigger=st.sampled_from(TRIGGERS), data=INPUTS, key=KEYS)
    def fire(self, iid: str, who: str, trigger: str, data: dict[str, Any],
             key: str | None) -> None:
        owner = self.owner[iid]
        actor = owner if who == "owner" else who
        before = len(self.events(iid))
        sent = self.sent.get((iid, actor, key)) if key else None
        outcome = self.attempt(self.runtime.advance(iid, trigger, data, idempotency_key=key,
                                                    actor=actor))
        history = self.events(iid)
        if isinstance(outcome, EngineError):
            TALLY[outcome.error_id] += 1
            # A key's step sent again is answered as it was, never refused.
            assert sent is None or sent.trigger != trigger, outcome
            if isinstance(outcome, Forbidden):
                assert actor not in (owner, PROVIDER)
            if isinstance(outcome, IdempotencyKeyReused):
                assert sent is not None
            # A refusal changes nothing (a due timeout may have fired on the way in).
            assert {e.actor for e in history[before:]} <= {"timer"}
        elif outcome.replayed:
            TALLY["replayed"] += 1
            # Only the sender's own key finds its own step, and nothing is stepped anew.
            assert sent is not None
            assert outcome.event == sent
            assert (outcome.instance.version, outcome.instance.state) == (sent.seq,
                                                                          sent.to_state)
            assert len(history) == before
        else:
            TALLY["applied"] += 1
            TALLY["to:" + outcome.instance.state] += 1
            assert sent is None
            assert actor in (owner, PROVIDER)
            assert history[-1] == outcome.event
            assert outcome.event.actor == actor
            assert {e.actor for e in history[before:-1]} <= {"timer"}
            if key:
                self.sent[(iid, actor, key)] = outcome.event
        self.check(iid)

    @rule(data=st.data(), same=st.booleans())
    def send_again(self, data: st.DataObject, same: bool) -> None:
        """A step sent again with its key gets its first answer; with another trigger, 409."""
        if not self.sent:
            return
        (iid, actor, key), event = data.draw(st.sampled_from(list(self.sent.items())))
        other = "close" if event.trigger == "nudge" else "nudge"
        self.fire(iid, actor, event.trigger if same else other, {}, key)

    @rule(iid=instances, moves=st.lists(st.tuples(st.booleans(), st.booleans()),
                                        min_size=1, max_size=4))
    def proceed(self, iid: str, moves: list[tuple[bool, bool]]) -> None:
        """A plausible user, or provider: each step's own trigger, right or wrong."""
        for right, back in moves:
            state = self.run(self.store.load(iid))[0].state
            if state == "details":
                self.fire(iid, "owner", "submit", {"name": "Ada", "password": "pw-Secret-1",
                                                   "agree": right or back}, None)
            elif state == "code":
                trigger, body = ("back", {}) if back and not right else (
                    "confirm", {"code": "123456" if right else "000000"})
                self.fire(iid, "owner", trigger, body, None)
            elif state == "waiting" and back:
                self.fire(iid, "owner", "close" if right else "nudge", {}, None)
            elif state == "waiting":
                self.fire(iid, PROVIDER, "result", {"outcome": "pass" if right else "fail"},
                          None)
            else:
                self.fire(iid, "owner", "confirm", {"code": "123456"}, None)

    @rule(iid=instances, n=st.sampled_from([2, 5, 20]), same_key=st.booleans(),
          right=st.booleans())
    def at_once(self, iid: str, n: int, same_key: bool, right: bool) -> None:
        """Many requests for one instance at once: no step lost, none made twice."""
        instance = self.run(self.store.load(iid))[0]
        if instance.status != "active":
            return  # twenty refusals at once prove nothing more than one
        state = instance.state
        trigger, body, actor = {
            "details": ("submit", {"name": "Ada", "password": "pw-Secret-1", "agree": True},
                        self.owner[iid]),
            "waiting": ("result", {"outcome": "pass" if right else "fail"}, PROVIDER),
        }.get(state, ("confirm", {"code": "123456" if right else "000000"}, self.owner[iid]))
        keys = [f"race-{len(self.events(iid))}" + ("" if same_key else f"-{k}")
                for k in range(n)]
        before = len(self.events(iid))

        async def all_at_once() -> list[Any]:
            return await asyncio.gather(
                *(self.runtime.advance(iid, trigger, body, idempotency_key=k, actor=actor)
                  for k in keys), return_exceptions=True)

        results = self.run(all_at_once())
        for r in results:
            assert isinstance(r, StepOutcome | EngineError), r
            TALLY["race:" + (type(r).__name__ if isinstance(r, EngineError) else
                             "replayed" if r.replayed else "applied")] += 1
        applied = [r for r in results if isinstance(r, StepOutcome) and not r.replayed]
        history = self.events(iid)
        assert len([e for e in history[before:] if e.actor != "timer"]) == len(applied)
        assert all(r.event in history for r in results if isinstance(r, StepOutcome))
        if same_key:
            # One step; whoever was not first gets its answer, or a 409 to retry.
            assert len(applied) <= 1
            assert len({r.event.hash for r in results if isinstance(r, StepOutcome)}) <= 1
        for key, r in zip(keys, results, strict=True):
            if isinstance(r, StepOutcome) and not r.replayed:
                self.sent[(iid, actor, key)] = r.event
        self.check(iid)

    # -- time ---------------------------------------------------------------------------
    # Mostly short waits, sometimes past a timeout, the ticket's 5 h or signup's 7 days.
    @rule(hours=st.sampled_from([0, 1, 1, 2, 12, 73, 170]))
    def wait(self, hours: int) -> None:
        self.clock.advance(timedelta(hours=hours))

    @rule(iid=instances)
    def wait_for_deadline(self, iid: str) -> None:
        """Just long enough for an instance's timeout to be due."""
        deadline = self.run(self.store.load(iid))[0].deadline_at
        if deadline is not None and deadline > self.clock.now():
            self.clock.current = deadline

    @rule()
    def timers_due(self) -> None:
        """What the timer worker does: claim what is due, fire each through the step."""
        for timer in self.run(self.store.claim_timers(self.clock.now(),
                                                      timedelta(seconds=30), 50)):
            outcome = self.run(self.runtime.fire_timer(timer))
            TALLY["timer:" + ("none" if outcome is None else outcome.instance.state)] += 1
            self.fired.append(timer)
            self.check(timer.instance_id)

    @rule(data=st.data())
    def timer_again(self, data: st.DataObject) -> None:
        """A timer fired again (a second worker, a lease run out) is never a second step."""
        if not self.fired:
            return
        timer = data.draw(st.sampled_from(self.fired))
        before = len(self.events(timer.instance_id))
        outcome = self.run(self.runtime.fire_timer(timer))
        if outcome is not None and outcome.replayed:
            TALLY["timer:replayed"] += 1
            assert len(self.events(timer.instance_id)) == before
        self.check(timer.instance_id)

    @rule(iid=instances)
    def read(self, iid: str) -> None:
        self.run(self.runtime.get(iid))
        self.check(iid)

    @rule()
    def deliver(self) -> None:
        self.run(self.outbox.run_once())
        assert len(DELIVERED) == len(set(DELIVERED)), "a message went out twice"

    # -- what must always hold --------------------------------------------------------------
    def events(self, iid: str) -> list[Event]:
        return self.run(self.store.events(iid))  # type: ignore[no-any-return]

    def check(self, iid: str) -> None:
        self.run(self.checked(iid))

    async def checked(self, iid: str) -> None:
        """The history verifies, replays to the live instance, and its timers are its own."""
        instance = (await self.store.load(iid))[0]
        events = await self.store.events(iid)
        assert [e.seq for e in events] == list(range(1, instance.version + 1))
        compiled = await self.runtime.compiled(instance.definition_hash)
        result = replay(compiled, events)
        # Every live column the replay derives, the timers as the store holds them.
        compare_live(result, instance.state, instance.context, instance.version,
                     instance.last_hash, status=instance.status, owner=instance.owner,
                     expires_at=instance.expires_at, deadline_at=instance.deadline_at,
                     timers=[(t.state, t.trigger, t.due_at) for t in self.store.timers(iid)],
                     now=self.clock.now())
        TALLY["at:" + instance.state] += 1
        assert (result.status, result.deadline_at) == (instance.status, instance.deadline_at)
        timer_ids = [e.facts["timer"]["id"] for e in events if "timer" in e.facts]
        assert len(timer_ids) == len(set(timer_ids)), "a timer stepped twice"
        # The one timer of the state it is in, due at its deadline; dropped only once the
        # instance expired.
        pending = self.store.timers(iid)
        armed = [instance.deadline_at] if instance.status == "active" and \
            instance.deadline_at else []
        assert [t.due_at for t in pending] == armed or (
            pending == [] and instance.expired(self.clock.now())), (pending, instance)
        assert all(t.state == instance.state for t in pending)
        for m in self.store.messages(iid):
            assert m.idempotency_key.startswith(f"{iid}:{m.seq}:")
            assert m.seq <= instance.version

    def teardown(self) -> None:
        try:
            for iid in self.owner:
                self.check(iid)
        finally:
            self.loop.close()


def test_any_steps_over_the_memory_store_replay_to_the_live_state() -> None:
    TALLY.clear()
    MemorySteps.TestCase.settings = settings(
        # Derandomized and with no example database: the same runs every time, so the
        # coverage check below is stable.
        max_examples=200, stateful_step_count=40, deadline=None, derandomize=True,
        database=None, suppress_health_check=[HealthCheck.too_slow])
    MemorySteps.TestCase().runTest()
    # The runs met every state, refusal and race, or they proved little.
    seen = set(TALLY)
    assert {"to:code", "to:done", "to:details", "to:waiting", "to:closed", "at:lapsed",
            "timer:waiting", "timer:replayed", "replayed",
            "race:applied", "race:replayed", "race:ConcurrencyConflict", "forbidden",
            "validation_failed", "trigger_not_allowed", "idempotency_key_reused",
            "flow_expired", "flow_finished", "start:forbidden",
            "start:idempotency_key_reused"} <= seen, sorted(seen)
