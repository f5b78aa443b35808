"""A signed-in account's own password (SPEC 10.4, 10.1.4), end to end over HTTP:
``change_password``, written in flows.yaml from building blocks only (flows/profile.py),
for personal, supervisor and organisation accounts alike.
"""

from __future__ import annotations

from typing import Any

from tests.flows.test_phones import new_account, second_browser, sign_in, signed_in_as
from tests.flows.test_verification import _session, new_organisation
from tests.platform import PASSWORD, Platform, new_mobile

FLOW = "change_password"
NEW = "Fresh-Lantern-58"
WRONG = "Wrong-Pass-1"


def body(current: str = PASSWORD, new: str = NEW, again: str | None = None) -> dict[str, Any]:
    return {"current_password": current, "password": new,
            "password_confirm": new if again is None else again}


def refused(answer: tuple[int, dict[str, Any]]) -> list[tuple[str | None, str]]:
    status, view = answer
    assert status == 422, view
    return [(e["field"], e["error_id"]) for e in view["errors"]]


async def test_a_person_changes_the_password_and_is_signed_out_everywhere_else(
        platform: Platform) -> None:
    person = await new_account(platform, phone=new_mobile())
    await sign_in(platform, person["login"])
    async with second_browser(platform) as other:
        await sign_in(other, person["login"])
        view = await platform.start(FLOW)
        iid = view["id"]
        assert view["ui"]["data"] == {"login_name": person["login"]}
        # Each refusal under its field; the form stays, nothing changes.
        assert refused(await platform.step(iid, "submit", body(current=WRONG))) == [
            ("current_password", "current_password_wrong")]
        assert refused(await platform.step(iid, "submit", body(new="Ab1!"))) == [
            ("password", "password_too_short")]
        assert refused(await platform.step(iid, "submit", body(again="Fresh-Lantern-59"))) \
            == [("password_confirm", "password_mismatch")]
        assert refused(await platform.step(iid, "submit", body(new=PASSWORD))) == [
            ("password", "password_unchanged")]
        done = await platform.ok(iid, "submit", body())
        assert done["state"] == "done"
        assert await signed_in_as(platform)
        assert not await signed_in_as(other)
        assert await sign_in(other, person["login"], NEW) == 200
        assert await sign_in(other, person["login"], PASSWORD) == 422
    history = await (await platform.client.get(f"/api/flows/{iid}/history")).text()
    assert NEW not in history
    assert PASSWORD not in history


async def test_wrong_current_passwords_count_with_the_sign_in_failures_and_lock_both(
        platform: Platform) -> None:
    """A stolen session gets no more guesses at the password than signing in gives."""
    person = await new_account(platform)
    await sign_in(platform, person["login"])
    iid = (await platform.start(FLOW))["id"]
    for _ in range(5):
        assert refused(await platform.step(iid, "submit", body(current=WRONG))) == [
            ("current_password", "current_password_wrong")]
    # The right one is refused now, unchecked, and so is a sign-in.
    assert refused(await platform.step(iid, "submit", body())) == [
        ("current_password", "current_password_locked")]
    async with second_browser(platform) as other:
        assert await sign_in(other, person["login"]) == 422


async def test_failed_sign_ins_count_against_the_current_password_too(
        platform: Platform) -> None:
    person = await new_account(platform)
    await sign_in(platform, person["login"])
    iid = (await platform.start(FLOW))["id"]
    async with second_browser(platform) as other:
        for _ in range(5):
            assert await sign_in(other, person["login"], WRONG) == 422
    assert refused(await platform.step(iid, "submit", body())) == [
        ("current_password", "current_password_locked")]


async def test_a_supervisor_changes_the_password(platform: Platform) -> None:
    supervisor = await new_account(platform, kind="supervisor")
    await sign_in(platform, supervisor["login"])
    iid = (await platform.start(FLOW))["id"]
    assert (await platform.ok(iid, "submit", body()))["state"] == "done"
    async with second_browser(platform) as other:
        assert await sign_in(other, supervisor["login"], NEW) == 200


async def test_an_organisation_changes_the_password_and_keeps_its_agents_session(
        platform: Platform) -> None:
    org = await new_organisation(platform)
    elsewhere = await _session(platform, org.account_id, "organisation", "测试科技有限公司")
    view = await platform.start(FLOW, headers=org.auth)
    iid = view["id"]
    assert view["ui"]["data"] == {"login_name": org.login_name}
    done = await platform.ok(iid, "submit", body(), headers=org.auth)
    assert done["state"] == "done"
    # The session that changed it is still the agent's.
    me = await platform.client.get("/api/session", headers=org.auth)
    assert me.status == 200
    assert (await me.json())["agent_id"] is not None
    gone = await platform.client.get("/api/session",
                                     headers={"Authorization": f"Bearer {elsewhere}"})
    assert gone.status == 401
