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

**Whose face, and whether a pass is remembered, are parameters.** ``name`` and
``id_number`` name the fields that hold the person; ``remember`` says whether a pass
lets its owner skip later (``for_owner``: a registration) or not (``never``: the legal
representative's face, with the organisation as owner). Versions written before these
parameters give none: then the person is ``name``/``id_number``, or, where the flow
records ``legal_rep_id`` instead (organisation verification), the legal
representative, whose pass is never remembered; and a step whose ``method`` field
chooses another method than ``face`` counts no session.
"""

from __future__ import annotations

from typing import Any

from engine import ActionInput, GuardInput, Param, Refusal, Registry, ValidationFailed
from flows.policies import AttemptsPolicy, FaceSessionsPolicy, FaceSkipPolicy
from flows.support import services

# Owners a pass can be bound to: a browser (its device cookie's hash) or an account.
SKIPPING_OWNERS = ("device:", "account:")
# Where versions from before the person's parameters find the legal representative.
_LEGACY_REP = ("legal_rep_name", "legal_rep_id")

NAME = Param("name", "field", "The field that holds the name of the person whose face is "
             "verified. Not given: `name` (in versions written before this parameter whose "
             "flow records `legal_rep_id` instead, `legal_rep_name`).", default=None,
             scope="flow")
ID_NUMBER = Param("id_number", "field", "The field that holds that person's ID number. Not "
                  "given: `id_number` (or `legal_rep_id`, as for `name`).", default=None,
                  scope="flow")
METHOD = Param("method", "field", "A choice field that picks how to verify: a step that "
               "takes it counts a session only when it says `face` (a step that does not "
               "take it counts one). Not given: the field `method`.", default=None,
               scope="flow")
REMEMBER = Param("remember", "enum", "Whether a pass lets the instance's owner skip the "
                 "face step of a later registration of the same person (`for_owner`, "
                 "within face_skip.within) or not (`never`). Not given: `for_owner`, except "
                 "for the legal representative of a version written before this parameter.",
                 default=None, choices=("for_owner", "never"))
RESULT = Param("result", "field", "The field the provider's callback fills with `pass` or "
               "`fail`.", default="result")
SESSION = Param("session", "field", "The field the provider's callback fills with its "
                "session id: a result for another session than the current one is refused. "
                "Not given: `session_id`, if the step has it (versions written before "
                "callbacks carried their session have none).", default=None)
NOT_CURRENT = Refusal("face_session_not_current", "该人脸识别会话已被新的会话取代",
                      "This face session is not the one this step is waiting for",
                      param="session")


def _legacy_rep(a: ActionInput) -> bool:
    """A version from before the person's parameters, verifying a legal representative."""
    return a.params.get("name") is None and a.params.get("id_number") is None \
        and a.value("name") is None and a.value(_LEGACY_REP[1]) is not None


def _person(a: ActionInput) -> tuple[str, str]:
    """Whose face: the fields the parameters name."""
    if _legacy_rep(a):
        name_field, id_field = _LEGACY_REP
    else:
        name_field = a.params.get("name") or "name"
        id_field = a.params.get("id_number") or "id_number"
    return str(a.value(name_field)), str(a.value(id_field))


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


def _other_method(a: ActionInput) -> bool:
    """This step chose another way than face verification (parameter ``method``)."""
    field = a.params.get("method") or "method"
    return field in a.input and a.input[field] != "face"


async def reserve_face_session(a: ActionInput) -> dict[str, Any] | None:
    """Action: count the face session this step would open against the person's limit.

    Nothing is counted when the step opens none: a fact of this step says the owner
    passed before (``face_passed_before``, as ``verify_real_name`` gives), another method
    was chosen, or the flow has used its own sessions up.
    """
    if any(isinstance(f, dict) and f.get("face_passed_before") for f in a.facts.values()) \
            or _other_method(a):
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
    session_field = a.params.get("session") or "session_id"
    if session_field in a.input and a.input[session_field] != current:
        raise ValidationFailed([NOT_CURRENT.error({"session": session_field})])
    passed = a.input.get(a.params["result"]) == "pass"
    # A legal representative's pass is not remembered: the organisation is the owner.
    remember = a.params.get("remember") or ("never" if _legacy_rep(a) else "for_owner")
    if passed and remember == "for_owner" and _can_skip(a.owner):
        s = services(a)
        name, id_number = _person(a)
        a.write(s.accounts.record_face_pass(person_index(a, name, id_number), a.owner,
                                            a.instance_id, a.now))
    return {"passed": passed, "session_id": current}


def face_passed(g: GuardInput) -> bool:
    """The callback's ``result`` (parameter ``result``) is ``pass``."""
    return g.input.get(g.params["result"]) == "pass"


def register(registry: Registry) -> None:
    """Register this module's actions and guards."""
    registry.action(
        "reserve_face_session", params=[NAME, ID_NUMBER, METHOD],
        results={"person_sessions": "How many face sessions this person has had within "
                                    "face_sessions.within, this one included (null: the "
                                    "flow has used its own up; no fact: none counted)."},
        refusals=[])(reserve_face_session)
    registry.action(
        "start_face_session", params=[NAME, ID_NUMBER],
        results={"session_id": "The provider's session id.",
                 "qr_url": "The address of the QR code to scan.",
                 "n": "How many face sessions this flow has opened, this one included."},
        refusals=[])(start_face_session)
    registry.action(
        "record_face_result", params=[RESULT, SESSION, NAME, ID_NUMBER, REMEMBER],
        results={"passed": "Whether the face matched.",
                 "session_id": "The session the result is for."},
        refusals=[NOT_CURRENT])(record_face_result)
    registry.guard("face_passed_before", params=[])(face_passed_before)
    registry.guard("face_sessions_left", params=[])(face_sessions_left)
    registry.guard("face_passed", params=[RESULT])(face_passed)


__all__ = ["passed_before", "person_index", "register"]
