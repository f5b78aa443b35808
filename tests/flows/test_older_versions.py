"""Instances pinned to the versions flows.yaml had before its actions took their fields,
purposes and persons as parameters run with this code, and mean what they meant then.

``flows_3812e1f.yaml`` is flows.yaml as it was then (commit 3812e1f). Its actions give no
parameters: the loader fills in the defaults, which reproduce what each version meant,
down to the organisation verification's face step (the legal representative's face,
never remembered as a pass).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from engine import CompiledFlow, FlowSet, Registry, load_file, load_text
from engine.params import problems
from flows.verification import METHOD_LABELS
from tests.flows.test_verification import (
    REP_NAME,
    credited_amount,
    new_organisation,
    organisation_row,
    send_deposit,
    start,
)
from tests.platform import Platform
from web import keys

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
OLDER = HERE / "flows_3812e1f.yaml"
REGISTRY = Registry().load_modules(["flows"])


def test_the_flows_left_as_they_were_keep_their_versions() -> None:
    older = load_file(str(OLDER), REGISTRY).flows
    now = load_file(str(ROOT / "flows.yaml"), REGISTRY).flows
    changed = sorted(name for name, flow in older.items() if now[name].version != flow.version)
    # organisation_verification changed its steps; the others took captions and next
    # actions for clients (show_labels, choice_labels, next, reply_labels): a new version
    # each, which instances of the old one never see.
    assert sorted(older.keys() - set(changed)) == []
    assert sorted(now.keys() - older.keys()) == [
        "add_agent", "change_certification", "change_password", "change_phone",
        "change_seal_style", "create_seal", "delete_seal", "remove_agent", "transfer_primary"]


def test_every_older_version_runs_with_this_code() -> None:
    for flow in load_file(str(OLDER), REGISTRY).flows.values():
        assert problems(flow, REGISTRY) == [], flow.name
        CompiledFlow(flow, REGISTRY)


def shown_method(serving: str, method: str) -> Any:
    """The older version shows the method's code; the current one, its label."""
    older = load_file(str(OLDER), REGISTRY).flows["organisation_verification"].version
    return method if serving == older else METHOD_LABELS[method]


@pytest.fixture(params=["older", "current"])
async def serving(request: pytest.FixtureRequest,
                  platform: Platform) -> AsyncIterator[str]:
    """The platform serving flows.yaml as it was (new instances start on it), or as it is;
    the version of organisation_verification it serves."""
    runtime = platform.app[keys.RUNTIME]
    current: FlowSet = runtime.flows
    if request.param == "older":
        await runtime.reload(load_text(OLDER.read_text(encoding="utf-8"),
                                       registry=platform.app[keys.REGISTRY]))
    yield runtime.flows.flows["organisation_verification"].version
    await runtime.reload(current)


async def face_passes(pool: asyncpg.Pool, instance_id: str) -> int:
    async with pool.acquire() as conn:
        return int(await conn.fetchval(
            "SELECT count(*) FROM face_passes WHERE instance_id = $1::uuid", instance_id))


async def test_the_legal_representatives_face_verifies_and_is_not_remembered(
        platform: Platform, pool: asyncpg.Pool, serving: str) -> None:
    org = await new_organisation(platform)
    iid = await start(platform, org)
    view = await platform.ok(iid, "choose", {"method": "face"})
    assert view["state"] == "face_scan"
    session = await (await platform.client.get(
        "/sandbox/face/" + view["ui"]["data"]["qr_url"].rsplit("/", 1)[1] + ".json")).json()
    assert session["name"] == REP_NAME
    await platform.face(iid, "pass")
    view = await platform.wait_for(iid, "verified")
    assert view["ui"]["data"]["method"] == shown_method(serving, "face")
    assert (await organisation_row(platform, org.account_id))["verified_by"] == "face"
    assert await face_passes(pool, iid) == 0
    assert (await platform.app[keys.RUNTIME].get(iid)).definition_hash == serving


async def test_a_deposit_verifies_as_a_deposit(platform: Platform, serving: str) -> None:
    org = await new_organisation(platform)
    iid = await start(platform, org)
    account = await send_deposit(platform, iid)
    amount = await credited_amount(platform, iid, account)
    view = await platform.ok(iid, "submit_amount", {"amount": f"0.{amount:02d}"})
    assert view["state"] == "verified"
    assert view["ui"]["data"]["method"] == shown_method(serving, "deposit")
    assert (await organisation_row(platform, org.account_id))["verified_by"] == "deposit"
    assert (await platform.app[keys.RUNTIME].get(iid)).definition_hash == serving
