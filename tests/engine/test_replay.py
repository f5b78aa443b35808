"""Replay: any change to an exported history is caught at the event it touches."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import ReplayDivergence, Runtime, export_lines, load_text, replay, replay_export
from engine.replay import export_columns
from tests.sample_flows import SAMPLE_YAML, sample_registry

DETAILS = {"name": "李雷 Lei", "password": "pw-Secret-1", "agree": True}


async def exported(runtime: Runtime) -> list[str]:
    iid = (await runtime.start("signup")).instance.id
    await runtime.advance(iid, "submit", DETAILS)
    await runtime.advance(iid, "confirm", {"code": "999999"})
    await runtime.advance(iid, "confirm", {"code": "123456"})
    instance = await runtime.get(iid)
    content = runtime.flows.flows["signup"].content
    live = {"id": iid, "flow": "signup", "state": instance.state, "status": instance.status,
            "version": instance.version, "context": instance.context,
            "last_hash": instance.last_hash}
    return export_lines(content, live, await runtime.history(iid))


def replay_lines(lines: list[str]) -> Any:
    return replay_export(("\n".join(lines) + "\n").encode("utf-8"), sample_registry())


@pytest.fixture
async def lines(runtime: Runtime) -> list[str]:
    return await exported(runtime)


def test_an_untouched_export_replays_to_the_live_state(lines: list[str]) -> None:
    report = replay_lines(lines)
    assert report.ok, report.divergence
    assert report.events == 4
    assert report.state == "done"


def test_every_single_byte_change_in_an_event_fails_at_that_event(lines: list[str]) -> None:
    index = 4  # the third event: seq 3
    raw = lines[index].encode("utf-8")
    for pos in range(len(raw)):
        for flip in (0x01, 0x20):
            changed = bytearray(raw)
            changed[pos] ^= flip
            if changed[pos] == 0x0A:  # a newline would split the line: also a change
                continue
            data = "\n".join(lines[:index]).encode() + b"\n" + bytes(changed) + b"\n" + \
                "\n".join(lines[index + 1:]).encode() + b"\n"
            report = replay_export(data, sample_registry())
            assert not report.ok, (pos, changed)
            assert report.divergence["seq"] == 3, (pos, report.divergence)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture],
          deadline=None)
@given(data=st.data())
def test_a_random_byte_change_in_any_event_fails_at_that_event(lines: list[str],
                                                              data: st.DataObject) -> None:
    index = data.draw(st.integers(2, len(lines) - 1), label="line")
    raw = bytearray(lines[index].encode("utf-8"))
    pos = data.draw(st.integers(0, len(raw) - 1), label="pos")
    new = data.draw(st.integers(0, 255).filter(lambda b: b not in (raw[pos], 0x0A)),
                    label="byte")
    raw[pos] = new
    data_bytes = b"\n".join([*(ln.encode() for ln in lines[:index]), bytes(raw),
                             *(ln.encode() for ln in lines[index + 1:])]) + b"\n"
    report = replay_export(data_bytes, sample_registry())
    assert not report.ok
    assert report.divergence["seq"] == index - 1


def test_changing_the_definition_line_is_caught(lines: list[str]) -> None:
    tampered = [lines[0].replace('"dest":"done"', '"dest":"lapsed"', 1), *lines[1:]]
    report = replay_lines(tampered)
    assert not report.ok
    assert report.divergence["what"] == "definition"


def test_a_dropped_event_is_caught(lines: list[str]) -> None:
    report = replay_lines([*lines[:3], *lines[4:]])
    assert not report.ok
    assert report.divergence["seq"] == 2


async def test_a_guard_that_reads_the_world_is_caught_by_replay(runtime: Runtime) -> None:
    """A guard must be a pure function of context, input and facts."""
    registry = sample_registry()
    world = {"open": True}
    registry.guards["open_now"] = lambda g: world["open"]
    registry.guards["closed_now"] = lambda g: not world["open"]
    back = ("      - trigger: back\n        source: code\n        dest: details\n"
            "        fields: []\n")
    assert back in SAMPLE_YAML
    text = SAMPLE_YAML.replace(back, back + "        guards: [open_now]\n"
                               "      - trigger: back\n        source: code\n        dest: code\n"
                               "        fields: []\n        guards: ['!open_now']\n")
    rt = Runtime(runtime.store, runtime.clock, registry, load_text(text, registry=registry))
    await rt.publish()
    iid = (await rt.start("signup")).instance.id
    await rt.advance(iid, "submit", DETAILS)
    await rt.advance(iid, "back", {})
    world["open"] = False
    compiled = await rt.compiled((await rt.get(iid)).definition_hash)
    with pytest.raises(ReplayDivergence) as info:
        replay(compiled, await rt.history(iid))
    assert (info.value.seq, info.value.what) == (3, "to")
    assert (info.value.expected, info.value.found) == ("code", "details")


async def _exported_with_columns(runtime: Runtime) -> tuple[list[str], dict[str, Any]]:
    """An instance waiting on its code (its timer pending), exported as flowctl does."""
    iid = (await runtime.start("signup")).instance.id
    await runtime.advance(iid, "submit", DETAILS)
    await runtime.advance(iid, "confirm", {"code": "999999"})
    instance = await runtime.get(iid)
    timers = await runtime.store.pending_timers(iid)
    live = export_columns(instance, timers, runtime.clock.now())
    return export_lines(runtime.flows.flows["signup"].content, live,
                        await runtime.history(iid)), live


async def test_an_exports_live_columns_are_compared_too(runtime: Runtime) -> None:
    lines, live = await _exported_with_columns(runtime)
    assert live["deadline_at"] is not None
    assert [t["trigger"] for t in live["timers"]] == ["expire"]
    assert replay_lines(lines).ok

    def with_live(**changed: Any) -> Any:
        line = json.loads(lines[1])
        line.update(changed)
        return replay_lines([lines[0], json.dumps(line), *lines[2:]])

    later = "2030-01-01T00:00:00.000000+00:00"
    timer = live["timers"][0]
    for changed, what in [({"status": "finished"}, "status"),
                          ({"owner": "account:intruder"}, "owner"),
                          ({"expires_at": later}, "expires_at"),
                          ({"expires_at": "not a time"}, "expires_at"),
                          ({"deadline_at": None}, "deadline_at"),
                          ({"timers": [{**timer, "due_at": later}]}, "timer"),
                          ({"timers": [timer, timer]}, "timer"),
                          ({"timers": [{"due_at": later}]}, "timer"),
                          ({"timers": "none"}, "timer"),
                          ({"timers": []}, "timer")]:
        report = with_live(**changed)
        assert not report.ok, changed
        assert (report.divergence["seq"], report.divergence["what"]) == (3, what), changed
    # A timer gone once due and the instance expired, as of when it was exported: the
    # worker dropped it. An older export, without these columns: not compared.
    assert with_live(timers=[], exported_at=later).ok
    assert with_live(timers=[], exported_at=timer["due_at"]).divergence["what"] == "timer"
    older = {k: v for k, v in live.items()
             if k not in ("owner", "expires_at", "deadline_at", "timers", "exported_at")}
    assert replay_lines([lines[0], json.dumps({"kind": "instance", **older}),
                         *lines[2:]]).ok
    report = with_live(timers=[{**timer, "due_at": later}])
    assert report.divergence["expected"] == [timer]
    assert report.divergence["found"] == [{**timer, "due_at": later}]
