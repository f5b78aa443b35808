"""Sign-in lockouts count the account, whatever was typed, and hold under concurrency.

End to end over HTTP on the real flows.yaml: personal log-in (ID number, mobile number
or login name), organisation log-in and back-office log-in. The policy is flows.yaml's
``login_lockout``: 5 failures in 15 minutes lock for 15 minutes.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import pytest

from flows.captcha import CAPTCHA_EXPIRED
from flows.pii import MOBILE, RESIDENT_ID
from tests.flows.test_backoffice import ADMIN_PASSWORD, new_admin
from tests.flows.test_passwords import Gate, until
from tests.flows.test_verification import new_organisation
from tests.platform import (
    PASSWORD,
    WRONG_CAPTCHA,
    Answer,
    Platform,
    id_spellings,
    mobile_spellings,
    new_id_number,
    new_login_name,
    new_mobile,
)
from web import keys

WRONG = "Wrong-Pass-1"
MAX_FAILURES = 5


@attrs.frozen
class Person:
    login: str
    phone: str
    id_number: str


async def new_person(p: Platform, *, must_change_password: bool = False) -> Person:
    """A personal account with a login name, a mobile number and an ID number."""
    s = p.app[keys.SERVICES]
    person = Person(new_login_name(), new_mobile(), new_id_number())
    write = s.accounts.create_person(
        account_id=str(uuid.uuid4()), kind="personal", login_name=person.login,
        display_name="王五", password_hash=await s.hasher.hash(PASSWORD),
        id_number_sealed=s.vault.seal(RESIDENT_ID, person.id_number),
        id_number_index=s.vault.index(RESIDENT_ID, person.id_number),
        phone_sealed=s.vault.seal(MOBILE, person.phone),
        phone_index=s.vault.index(MOBILE, person.phone),
        must_change_password=must_change_password, now=p.app[keys.CLOCK].now())
    async with p.app[keys.POOL].acquire() as conn:
        await write(conn)
    return person


async def attempt(p: Platform, identifier: str, password: str, *, flow: str = "personal_login",
                  field: str = "identifier") -> Answer:
    """One sign-in in a new instance, captcha right: the answer, comparable."""
    iid = (await p.start(flow))["id"]
    captcha = await p.captcha(iid)
    return await p.answer(iid, "submit", {field: identifier, "password": password,
                                          "captcha": captcha})


def signed_in(answer: Answer) -> bool:
    return answer.status == 200 and answer.body["state"] in ("signed_in", "agent_check")


async def fail(p: Platform, identifier: str, times: int = MAX_FAILURES, **kw: Any) -> None:
    for _ in range(times):
        answer = await attempt(p, identifier, WRONG, **kw)
        assert answer.error_ids == ["login_failed"], answer


async def test_every_spelling_of_an_identifier_names_the_same_account(
        platform: Platform) -> None:
    person = await new_person(platform)
    for typed in [*mobile_spellings(person.phone), *id_spellings(person.id_number),
                  person.login.upper(), f" {person.login} "]:
        assert signed_in(await attempt(platform, typed, PASSWORD)), typed


async def test_failures_by_mobile_lock_every_other_spelling_and_identifier_of_the_account(
        platform: Platform) -> None:
    person = await new_person(platform)
    await fail(platform, person.phone)
    locked_wrong = await attempt(platform, person.phone, WRONG)
    assert locked_wrong.error_ids == ["login_locked"]
    for typed in [person.phone, *mobile_spellings(person.phone), person.id_number,
                  *id_spellings(person.id_number), person.login, person.login.upper()]:
        # The right password too: the same answer as a wrong one while locked.
        answer = await attempt(platform, typed, PASSWORD)
        assert answer == locked_wrong, typed
    assert locked_wrong.body["errors"][0]["en"] \
        == "Too many failed sign-ins; try again in 15 minute(s)"
    # Another account is not touched.
    other = await new_person(platform)
    assert signed_in(await attempt(platform, other.phone, PASSWORD))


async def test_failures_under_different_spellings_add_up_to_one_lock(
        platform: Platform) -> None:
    person = await new_person(platform)
    spellings = [person.id_number, mobile_spellings(person.phone)[1], person.login.upper(),
                 mobile_spellings(person.phone)[6], id_spellings(person.id_number)[-1]]
    for typed in spellings:
        assert (await attempt(platform, typed, WRONG)).error_ids == ["login_failed"]
    assert (await attempt(platform, person.login, PASSWORD)).error_ids == ["login_locked"]


async def test_a_right_password_clears_the_failures(platform: Platform) -> None:
    person = await new_person(platform)
    await fail(platform, person.phone, MAX_FAILURES - 1)
    assert signed_in(await attempt(platform, person.id_number, PASSWORD))
    await fail(platform, person.login, MAX_FAILURES - 1)
    assert signed_in(await attempt(platform, person.phone, PASSWORD))


async def test_the_failures_a_right_password_clears_go_with_the_session_it_starts(
        platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    person = await new_person(platform)
    await fail(platform, person.phone, MAX_FAILURES - 1)
    ephemeral = platform.app[keys.SERVICES].ephemeral
    deleted: list[str] = []
    plain_delete = ephemeral.delete

    async def delete(key: str) -> None:
        deleted.append(key)
        await plain_delete(key)

    monkeypatch.setattr(ephemeral, "delete", delete)
    assert signed_in(await attempt(platform, person.id_number, PASSWORD))
    # Not a round trip of its own: in the session's batch.
    assert deleted == []
    await fail(platform, person.login, MAX_FAILURES - 1)
    assert signed_in(await attempt(platform, person.phone, PASSWORD))


async def test_a_right_password_clears_the_failures_where_no_session_starts_yet(
        platform: Platform) -> None:
    # A one-time password: the step goes on to change it, not to a session, and the
    # count is cleared at the step's end instead of with the session.
    person = await new_person(platform, must_change_password=True)
    for _ in range(2):
        await fail(platform, person.phone, MAX_FAILURES - 1)
        answer = await attempt(platform, person.login, PASSWORD)
        assert answer.status == 200, answer
        assert answer.body["state"] == "change_password", answer


async def test_a_wrong_captcha_neither_counts_nor_checks_the_password(
        platform: Platform) -> None:
    person = await new_person(platform)
    checks = count_checks(platform)
    for _ in range(MAX_FAILURES + 2):
        iid = (await platform.start("personal_login"))["id"]
        await platform.captcha(iid)
        answer = await platform.answer(iid, "submit", {
            "identifier": person.phone, "password": PASSWORD, "captcha": WRONG_CAPTCHA})
        assert answer.error_ids == ["login_failed"]
    assert checks == {"verify": 0, "verify_dummy": MAX_FAILURES + 2}
    assert signed_in(await attempt(platform, person.phone, PASSWORD))


async def test_an_attempt_refused_as_locked_uses_up_its_captcha(platform: Platform) -> None:
    person = await new_person(platform)
    await fail(platform, person.login)
    iid = (await platform.start("personal_login"))["id"]
    captcha = await platform.captcha(iid)
    answer = await platform.answer(iid, "submit", {
        "identifier": person.phone, "password": PASSWORD, "captcha": captcha})
    assert answer.error_ids == ["login_locked"]
    # Read with the lock in one round trip, it is used up as any attempt's is.
    assert await platform.app[keys.SERVICES].captchas.check(iid, captcha) == CAPTCHA_EXPIRED


async def test_sessions_ended_while_the_password_is_checked_end_the_one_it_starts(
        platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    """The account's session generation is read before its password is checked: ending
    its sessions meanwhile (a password reset elsewhere) ends the one this sign-in makes."""
    person = await new_person(platform)
    s = platform.app[keys.SERVICES]
    account = await s.accounts.by_login_name(person.login)
    assert account is not None
    gate = Gate()
    monkeypatch.setattr(s.hasher, "_verify", gate)
    iid = (await platform.start("personal_login"))["id"]
    captcha = await platform.captcha(iid)
    signing_in = asyncio.create_task(platform.answer(iid, "submit", {
        "identifier": person.login, "password": PASSWORD, "captcha": captcha}))
    await until(lambda: gate.running == 1)
    await s.sessions.end_all(account.id)
    gate.open.set()
    assert signed_in(await signing_in)
    assert (await platform.client.get("/api/session")).status == 401
    # Signing in again, nothing ended meanwhile: a session that holds.
    iid = (await platform.start("personal_login"))["id"]
    assert signed_in(await platform.answer(iid, "submit", {
        "identifier": person.login, "password": PASSWORD,
        "captcha": await platform.captcha(iid)}))
    assert (await platform.client.get("/api/session")).status == 200


def count_checks(p: Platform) -> dict[str, int]:
    """Count the hasher's password checks from now on: real ones and dummy ones."""
    hasher = p.app[keys.SERVICES].hasher
    calls = {"verify": 0, "verify_dummy": 0}

    def counting(name: str) -> Callable[..., Awaitable[bool]]:
        original = getattr(hasher, name)

        async def check(*args: Any) -> bool:
            calls[name] += 1
            result: bool = await original(*args)
            return result

        return check

    for name in calls:
        setattr(hasher, name, counting(name))
    return calls


async def race(p: Platform, identifier: str, n: int, *, flow: str = "personal_login",
               field: str = "identifier") -> list[Answer]:
    """``n`` wrong passwords at once, each in its own instance with its captcha fetched."""
    iids = [(await p.start(flow))["id"] for _ in range(n)]
    captchas = [await p.captcha(iid) for iid in iids]
    return list(await asyncio.gather(*(
        p.answer(iid, "submit", {field: identifier, "password": WRONG, "captcha": captcha})
        for iid, captcha in zip(iids, captchas, strict=True))))


async def test_twenty_parallel_wrong_passwords_check_at_most_five(platform: Platform) -> None:
    person = await new_person(platform)
    checks = count_checks(platform)
    answers = await race(platform, person.phone, 20)
    assert checks["verify"] <= MAX_FAILURES
    assert checks["verify_dummy"] == 0
    ids = sorted(a.error_ids[0] for a in answers)
    assert ids.count("login_failed") == checks["verify"]
    assert ids.count("login_locked") == 20 - checks["verify"]
    assert (await attempt(platform, person.login, PASSWORD)).error_ids == ["login_locked"]
    assert checks["verify"] <= MAX_FAILURES


async def test_twenty_parallel_guesses_at_an_unknown_identifier_are_bounded_alike(
        platform: Platform) -> None:
    checks = count_checks(platform)
    answers = await race(platform, new_mobile(), 20)
    assert checks["verify"] == 0
    assert checks["verify_dummy"] <= MAX_FAILURES
    assert sorted(a.error_ids[0] for a in answers).count("login_failed") \
        == checks["verify_dummy"]


async def test_an_unknown_identifier_answers_and_locks_exactly_like_a_known_one(
        platform: Platform) -> None:
    cases: list[tuple[Callable[[Person], str], Callable[[], str]]] = [
        (lambda who: who.phone, new_mobile), (lambda who: who.id_number, new_id_number),
        (lambda who: who.login, new_login_name)]
    for pick, make in cases:
        known, unknown = pick(await new_person(platform)), make()
        mask = {known: "<typed>", unknown: "<typed>"}
        steps = [WRONG] * MAX_FAILURES + [WRONG, PASSWORD]
        answers: dict[str, list[Answer]] = {known: [], unknown: []}
        for password in steps:
            for typed in (known, unknown):
                iid = (await platform.start("personal_login"))["id"]
                captcha = await platform.captcha(iid)
                answers[typed].append(await platform.answer(
                    iid, "submit", {"identifier": typed, "password": password,
                                    "captcha": captcha}, placeholders=mask))
        assert answers[known] == answers[unknown], known
        assert [a.error_ids[0] for a in answers[known]] \
            == ["login_failed"] * MAX_FAILURES + ["login_locked"] * 2


async def test_an_organisation_is_locked_whatever_the_case_or_width_of_its_login_name(
        platform: Platform) -> None:
    org = await new_organisation(platform)
    kw = {"flow": "legal_login", "field": "login_name"}
    await fail(platform, org.login_name.upper(), **kw)
    full_width = "".join(chr(ord(c) + 0xFEE0) for c in org.login_name)
    for typed in (org.login_name, full_width):
        assert (await attempt(platform, typed, PASSWORD, **kw)).error_ids == ["login_locked"]
    checks = count_checks(platform)
    other = await new_organisation(platform)
    answers = await race(platform, other.login_name, 20, **kw)
    assert checks["verify"] <= MAX_FAILURES
    assert len([a for a in answers if a.error_ids == ["login_failed"]]) == checks["verify"]


async def test_an_administrator_is_locked_whatever_the_case_of_the_login_name(
        platform: Platform) -> None:
    login = await new_admin(platform)
    kw = {"flow": "admin_login", "field": "login_name"}
    # The name typed into the personal sign-in names no account there: it counts apart
    # and locks nothing of the administrator's.
    await fail(platform, login)
    assert signed_in(await attempt(platform, login, ADMIN_PASSWORD, **kw))
    await fail(platform, login.upper(), **kw)
    answer = await attempt(platform, f" {login} ", ADMIN_PASSWORD, **kw)
    assert answer.error_ids == ["login_locked"]


async def test_a_login_flood_past_the_hashing_queue_gets_a_fast_503_and_costs_nothing(
        platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    """One hashing thread, two places in its queue: of eight right sign-ins sent while
    the hashes hang, five are refused at once (503 server_busy, Retry-After) and the
    three admitted finish when the hashes do. The refused ones counted no failure."""
    hasher = platform.app[keys.SERVICES].hasher
    gate = Gate()
    monkeypatch.setattr(hasher, "concurrency", 1)
    monkeypatch.setattr(hasher, "max_waiting", 2)
    monkeypatch.setattr(hasher, "_verify", gate)
    people = [await new_person(platform) for _ in range(8)]
    iids = [(await platform.start("personal_login"))["id"] for _ in people]
    captchas = [await platform.captcha(iid) for iid in iids]
    tasks = [asyncio.create_task(platform.answer(
        iid, "submit", {"identifier": person.login, "password": PASSWORD, "captcha": c}))
        for iid, c, person in zip(iids, captchas, people, strict=True)]
    await until(lambda: sum(t.done() for t in tasks) == 5)
    assert gate.done == 0
    refused = [t.result() for t in tasks if t.done()]
    assert {(a.status, a.body["error_id"], a.headers.get("Retry-After"))
            for a in refused} == {(503, "server_busy", "1")}
    gate.open.set()
    admitted = await asyncio.gather(*(t for t in tasks if not t.done()))
    assert all(signed_in(a) for a in admitted)
    assert gate.most == 1
    for person, task in zip(people, tasks, strict=True):
        if task.result() in refused:
            assert signed_in(await attempt(platform, person.login, PASSWORD))
