"""The benchmark's own flow: one state that loops on itself, so an instance steps forever.

``ping`` from ``ready`` back to ``ready`` is shaped like the most common real step, a
wrong SMS code sent again: an optional form field, one action whose result is recorded
as a fact, and two guarded transitions the machine has to choose between. Sending
``{"note": "stop"}`` ends the flow; the benchmark never does.

The server loads it with ``FLOW_MODULES=bench.flow`` and ``FLOWS_FILE`` pointing at a file
holding :data:`BENCH_YAML`.
"""

from __future__ import annotations

from typing import Any

from engine import ActionInput, GuardInput, Registry

FLOW = "bench"
TRIGGER = "ping"

BENCH_YAML = """\
flows:
  bench:
    title: {zh: 基准测试, en: Benchmark}
    expires_in: 3650d
    initial: ready
    states:
      ready:
        label: {zh: 就绪, en: Ready}
        fields:
          note:
            type: string
            max_length: 100
            label: {zh: 备注, en: Note}
      stopped:
        final: true
        label: {zh: 已停止, en: Stopped}
    transitions:
      - trigger: ping
        source: ready
        dest: ready
        guards: ["!stop_asked"]
        actions: [tick]
        label: {zh: 再来一次, en: Again}
      - trigger: ping
        source: ready
        dest: stopped
        guards: [stop_asked]
        actions: [tick]
"""

# What every benchmark step submits.
STEP_INPUT: dict[str, Any] = {"note": "ping"}


def register(registry: Registry) -> None:
    @registry.action("tick")
    async def tick(a: ActionInput) -> dict[str, Any]:
        return {"seq": a.seq}

    @registry.guard("stop_asked")
    def stop_asked(g: GuardInput) -> bool:
        return g.input.get("note") == "stop"


def bench_registry() -> Registry:
    registry = Registry()
    register(registry)
    return registry
