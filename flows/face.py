"""Face verification (人脸识别): personal registration (SPEC 1.2) and an organisation's
legal representative (SPEC 5).

**Sessions are paid provider calls, counted twice.** A flow instance opens at most
``attempts.face_sessions`` (3) of them, and one person at most
``face_sessions.per_person`` (5) in ``face_sessions.within`` (1 day), whatever the
instance or procedure: restarting, or starting anew, buys no more. The person is the ID
number (through the vault's HMAC index): a name spelt another way is the same person.
Every trigger that leads into a face state runs ``reserve_face_session`` first: it
counts the session the step is about to open in the ephemeral store, atomically (twenty
requests at once get twenty different counts) and once per step (a step retried after
a failure gets the count it had, as the provider gives it the session it had: both
are keyed by instance and seq). The fact says how many this person has had; the guard
``face_sessions_left`` compares it, and the flow's own count, with the policies pinned
with the version, so a step over either limit stays put with ``face_sessions_used_up``
instead of opening a session. Versions from before the per-person count have no such
fact: the guard decides for them as it did then.

**Only the current session decides.** A provider's callback names its session; the
state's hidden ``session_id`` field takes it, and ``record_face_result`` refuses one
that is not the latest ``start_face_session``'s (``face_session_not_current``): a late
callback of a superseded session changes nothing.

**A pass lets its owner skip, for a while.** A pass in a registration is recorded with
who started the instance (its owner: the browser that passed, ``device:<hash>``, or a
signed-in ``account:<id>``). A later registration of the same name and ID number skips
the face step only for that same owner, within ``face_skip.within`` (1 day) of the
pass; anybody else who knows a name and an ID number scans their face like everybody
else. An owner that is neither (``anonymous``) never skips and records nothing.
"""

from __future__ import annotations

from typing import Any

from engine import ActionInput, GuardInput, Registry
from flows.policies import AttemptsPolicy, FaceSessionsPolicy, FaceSkipPolicy
from flows.support import refuse, services

# Owners a pass can be bound to: a browser (its device cookie's hash) or an account.
SKIPPING_OWNERS = ("device:", "account:")


def _person(a: ActionInput) -> tuple[str, str]:
    """Whose face: the legal representative's in organisation verification, else the
    registering person's."""
    if a.flow == "organisation_verification":
        return str(a.value("legal_rep_name")), str(a.value("legal_rep_id"))
    return str(a.value("name")), str(a.value("id_number"))


def person_index(a: ActionInput, name: str, id_number: str) -> bytes:
    """The vault's HMAC index of a name and ID number: what a face pass is recorded under."""
    return services(a).vault.index("face_person", f"{name.strip()}\x00{id_number}")


def _can_skip(owner: str) -> bool:
    return owner.startswith(SKIPPING_OWNERS)


async def passed_before(a: ActionInput, name: str, id_number: str) -> bool:
    """Tell whether this instance's owner passed face verification for this person lately."""
    if not _can_skip(a.owner):
        return False
    window = FaceSkipPolicy.from_mapping(a.policies.get("face_skip")).within
    return await services(a).accounts.face_passed(person_index(a, name, id_number),
                                                  owner=a.owner, since=a.now - window)


def face_passed_before(g: GuardInput) -> bool:
    """This owner passed face verification for this name and ID number within the window."""
    return bool((g.fact("verify_real_name") or {}).get("face_passed_before"))


# -- sessions --------------------------------------------------------------------------

def _opened(facts: Any) -> int:
    return int((facts or {}).get("n", 0))


async def reserve_face_session(a: ActionInput) -> dict[str, Any] | None:
    """Action: count the face session this step would open against the person's limit.

    Nothing is counted when the step opens none: the owner passed before, another
    method was chosen, or the flow has used its own sessions up.
    """
    if (a.facts.get("verify_real_name") or {}).get("face_passed_before") \
            or a.input.get("method", "face") != "face":
        return None
    opened = _opened(a.fact("start_face_session"))
    if opened >= AttemptsPolicy.from_mapping(a.policies.get("attempts")).face_sessions:
        return {"person_sessions": None}
    policy = FaceSessionsPolicy.from_mapping(a.policies.get("face_sessions"))
    s = services(a)
    _, id_number = _person(a)
    person = s.vault.index("face_sessions", id_number).hex()[:32]
    count = await s.ephemeral.count_once(f"face_sessions:{person}",
                                         f"{a.instance_id}:{a.seq}", policy.within)
    return {"person_sessions": count}


def face_sessions_left(g: GuardInput) -> bool:
    """The flow has opened fewer face sessions than it may, and so has the person."""
    if _opened(g.fact("start_face_session")) >= \
            AttemptsPolicy.from_mapping(g.policies.get("attempts")).face_sessions:
        return False
    reserved = g.facts.get("reserve_face_session")
    if reserved is None:  # a version from before the per-person count
        return True
    count = reserved.get("person_sessions")
    per_person = FaceSessionsPolicy.from_mapping(g.policies.get("face_sessions")).per_person
    return count is not None and int(count) <= per_person


async def start_face_session(a: ActionInput) -> dict[str, Any]:
    """On entering face verification: open a provider session, remember whose it is."""
    s = services(a)
    name, id_number = _person(a)
    session = await s.providers.face.create_session(
        name, id_number, callback_url=f"{s.public_url}/api/callbacks/face",
        idempotency_key=a.idempotency_key)
    a.write(s.accounts.link_provider_ref("face", session.session_id, a.instance_id, a.now))
    return {"session_id": session.session_id, "qr_url": session.qr_url,
            "n": _opened(a.fact("start_face_session")) + 1}


# -- results ---------------------------------------------------------------------------

async def record_face_result(a: ActionInput) -> dict[str, Any]:
    """Action (provider callback): the current session's result; a registration's pass is
    remembered for the instance's owner."""
    current = (a.fact("start_face_session") or {}).get("session_id")
    if "session_id" in a.input and a.input["session_id"] != current:
        refuse("session_id", "face_session_not_current", "该人脸识别会话已被新的会话取代",
               "This face session is not the one this step is waiting for")
    passed = a.input.get("result") == "pass"
    # Only a registration's pass: an organisation's face check is the representative's,
    # with somebody else's session as owner.
    if passed and a.flow == "personal_registration" and _can_skip(a.owner):
        s = services(a)
        name, id_number = _person(a)
        a.write(s.accounts.record_face_pass(person_index(a, name, id_number), a.owner,
                                            a.instance_id, a.now))
    return {"passed": passed, "session_id": current}


def face_passed(g: GuardInput) -> bool:
    """The callback's ``result`` is ``pass``."""
    return g.input.get("result") == "pass"


def register(registry: Registry) -> None:
    """Register this module's actions and guards."""
    for fn in (reserve_face_session, start_face_session, record_face_result):
        registry.action(fn.__name__)(fn)
    for guard in (face_passed_before, face_sessions_left, face_passed):
        registry.guard(guard.__name__)(guard)


__all__ = ["passed_before", "person_index", "register"]
