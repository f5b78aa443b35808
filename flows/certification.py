"""Changing an organisation's certification data (SPEC 10.1.1): its name, credit code,
legal representative (name and ID number) and contact phone.

``load_certification``, in the initial state's ``on_enter``, lets only a signed-in
organisation account start, and none with a pending change; it records the data in force
(the ID number and the phone sealed, for the form's ``value_from``).
``check_certification_change`` checks what the submit changes, cheapest first: the
credit code is not another organisation's, an SMS code proves a new contact phone (as
the registrations prove theirs), and the real-name registry says a new legal
representative's name and ID number belong together. Then it either leaves the change
to ``apply_certification_change`` (an unverified organisation: applied in the same
step) or, for a verified organisation, stores it as *pending*: the organisation's own
row, the data in force everywhere (sign-in, agents, seals), stays as it is until
re-verification (the face of the legal representative named in the change, or a
micro-deposit, with organisation_verification's building blocks) applies it.

A pending change lives as long as its verification attempt, the flow instance: its
expiry, and the deadline of the state it waits in (the deposit's 72 hours). The
database keeps one pending change per organisation (a partial unique index) and one
claim on a credit code; a dead one never blocks: proposing a change first marks dead
ones expired, in the same transaction. ``end_certification_change`` ends one withdrawn
or expired. Every outcome is in the audit log, with personal data masked.
"""

from __future__ import annotations

import uuid
from typing import Any, ClassVar

import structlog

from engine import (
    ActionInput,
    DuplicateKey,
    EngineError,
    GuardInput,
    Param,
    Refusal,
    Registry,
    ValidationFailed,
)
from engine.values import Write
from flows.accounts import Organisation
from flows.identity import mask_mobile, mask_resident_id
from flows.pii import MOBILE, RESIDENT_ID
from flows.registration import CREDIT_CODE_REGISTERED, refusing_duplicates, under
from flows.sessions import RENAMED
from flows.sms import BAD_PHONE, CODE, CODE_REFUSALS, PHONE, PURPOSE, prove_phone
from flows.support import refuse_as, services, signed_in_account_id
from flows.verification import METHOD_LABELS, UNVERIFIED, VERIFIED, OrganisationRequired

log = structlog.get_logger("flows.certification")

# The data a change may change, in the order pages list it, and how a page names each.
FIELDS = ("name", "credit_code", "legal_rep_name", "legal_rep_id", "contact_phone")
FIELD_LABELS = {
    "name": {"zh": "企业名称", "en": "Organisation name"},
    "credit_code": {"zh": "统一社会信用代码", "en": "Unified social credit code"},
    "legal_rep_name": {"zh": "法定代表人姓名", "en": "Legal representative's name"},
    "legal_rep_id": {"zh": "法定代表人身份证号码", "en": "Legal representative's ID number"},
    "contact_phone": {"zh": "联系电话", "en": "Contact phone"},
}


class CertificationChangePending(EngineError, RuntimeError):
    """The organisation has a pending change: one at a time."""

    status: ClassVar[int] = 409
    error_id: ClassVar[str] = "certification_change_pending"
    zh: ClassVar[str] = "本单位已有一项待认证的认证信息变更，请先完成或撤回"
    en: ClassVar[str] = ("The organisation has a certification change waiting for "
                         "verification; finish or withdraw it first")

NAME = Param("name", "field", "The field that holds the organisation's name.",
             default="org_name")
CREDIT_CODE = Param("credit_code", "field", "The field that holds the unified social "
                    "credit code.", default="credit_code")
REP_NAME = Param("rep_name", "field", "The field that holds the legal representative's "
                 "name.", default="legal_rep_name")
REP_ID = Param("rep_id", "field", "The field that holds the legal representative's ID "
               "number; left empty, the one in force stays.", default="legal_rep_id")
OUTCOME = Param("outcome", "enum", "How the change ends: withdrawn by the organisation, or "
                "expired with its verification attempt.", default=None,
                choices=("withdrawn", "expired"))

UNCHANGED = Refusal("certification_unchanged", "未修改任何认证信息",
                    "Nothing in the certification data was changed")
CODE_NEEDED = Refusal("sms_code_required", "更换联系电话须填写发送到新号码的短信验证码",
                      "A new contact phone needs the SMS code sent to it", param="code")
REALNAME_MISMATCH = Refusal("realname_mismatch", "姓名与身份证号码不匹配",
                            "This name does not belong to this ID number", param="rep_name")
CREDIT_CODE_TAKEN = CREDIT_CODE_REGISTERED  # under the field of the credit_code parameter
# Applying, in a step without the field (a provider's callback): under the flow's field.
CREDIT_CODE_APPLIED = under(CREDIT_CODE_REGISTERED, "credit_code")
_ORGANISATION_REQUIRED = Refusal(OrganisationRequired.error_id, OrganisationRequired.zh,
                                 OrganisationRequired.en)
ORGANISATION_GONE = Refusal("organisation_gone", "企业账号不存在",
                            "The organisation no longer exists")


async def _organisation(a: ActionInput) -> Organisation:
    """The signed-in organisation taking the step (any of its agents), still there."""
    s = services(a)
    account_id = signed_in_account_id(a)
    account = await s.accounts.by_id(account_id) if account_id else None
    organisation = await s.accounts.organisation(account.id) \
        if account is not None and account.kind == "organisation" else None
    if organisation is None:
        raise OrganisationRequired()
    return organisation


def _status(verified: bool) -> dict[str, str]:
    """The organisation's status as a page shows it, in either language."""
    return dict(VERIFIED if verified else UNVERIFIED)


def labelled(changed: list[str] | tuple[str, ...]) -> list[dict[str, str]]:
    """The data a change changes, as a page names them."""
    return [FIELD_LABELS[name] for name in changed]


# -- start ------------------------------------------------------------------------------

async def load_certification(a: ActionInput) -> dict[str, Any] | None:
    """On entering the initial state at start: the signed-in organisation's data in force,
    unless it has a pending change (409).

    Re-entering the state records nothing new: its fact is there already.
    """
    if a.fact(a.action) is not None:
        return None
    s = services(a)
    organisation = await _organisation(a)
    if await s.accounts.pending_change(organisation.account_id, now=a.now) is not None:
        raise CertificationChangePending()
    rep_id = s.vault.open(RESIDENT_ID, organisation.legal_rep_id_sealed)
    phone = s.vault.open(MOBILE, organisation.contact_phone_sealed) \
        if organisation.contact_phone_sealed is not None else None
    return {"organisation_id": organisation.account_id, "verified": organisation.verified,
            "status": _status(organisation.verified), "name": organisation.name,
            "credit_code": organisation.credit_code,
            "legal_rep_name": organisation.legal_rep_name,
            # Sealed like sensitive fields: the form shows them masked, actions open them.
            "legal_rep_id": a.sealer.seal(RESIDENT_ID, rep_id),
            "mobile": a.sealer.seal(MOBILE, phone) if phone else None,
            "mobile_masked": mask_mobile(phone) if phone else None}


# -- the change -------------------------------------------------------------------------

def _typed(a: ActionInput, param: str) -> str | None:
    """A field's value, if one was entered (in this step or before): else None."""
    value = a.value(a.params[param])
    return str(value) if value not in (None, "") else None


async def check_certification_change(a: ActionInput) -> dict[str, Any]:
    """Action: what the submit changes, checked; a verified organisation's change stored as
    pending (see the module's notes), an unverified one's left to
    ``apply_certification_change``."""
    s = services(a)
    organisation = await _organisation(a)
    old_rep_id = s.vault.open(RESIDENT_ID, organisation.legal_rep_id_sealed)
    old_phone = s.vault.open(MOBILE, organisation.contact_phone_sealed) \
        if organisation.contact_phone_sealed is not None else None
    name, credit_code = str(a.value(a.params["name"])), str(a.value(a.params["credit_code"]))
    rep_name = str(a.value(a.params["rep_name"]))
    rep_id = _typed(a, "rep_id") or old_rep_id
    phone = _typed(a, "phone") or old_phone
    new = (name, credit_code, rep_name, rep_id, phone)
    old = (organisation.name, organisation.credit_code, organisation.legal_rep_name,
           old_rep_id, old_phone)
    changed = [f for f, n, o in zip(FIELDS, new, old, strict=True) if n != o]
    if not changed:
        refuse_as(a, UNCHANGED)
    if "credit_code" in changed:
        holder = await s.accounts.organisation_by_credit_code(credit_code)
        if holder is not None and holder.account_id != organisation.account_id:
            refuse_as(a, CREDIT_CODE_TAKEN)
    if "contact_phone" in changed:
        if not str(a.input.get(a.params["code"]) or "").strip():
            refuse_as(a, CODE_NEEDED)
        await prove_phone(a)
    if {"legal_rep_name", "legal_rep_id"} & set(changed) and not \
            await s.providers.realname.check(rep_name, rep_id,
                                             idempotency_key=a.idempotency_key):
        refuse_as(a, REALNAME_MISMATCH)
    shown = {"name": name, "credit_code": credit_code, "legal_rep_name": rep_name,
             "legal_rep_id": mask_resident_id(rep_id),
             "contact_phone": mask_mobile(phone) if phone else None}
    change_id = None
    if organisation.verified:
        change_id = str(uuid.uuid4())
        a.write(_refusing(a, s.accounts.propose_change(
            change_id=change_id, organisation_id=organisation.account_id,
            instance_id=a.instance_id, name=name, credit_code=credit_code,
            legal_rep_name=rep_name,
            legal_rep_id_sealed=s.vault.seal(RESIDENT_ID, rep_id),
            legal_rep_id_index=s.vault.index(RESIDENT_ID, rep_id),
            contact_phone_sealed=s.vault.seal(MOBILE, phone) if phone else None,
            contact_phone_index=s.vault.index(MOBILE, phone) if phone else None,
            changed=changed, shown=shown, now=a.now)))
        a.write(_audit(a, organisation.account_id, "propose_certification_change",
                       change_id, changed, shown))
        log.info("certification_change_proposed", organisation_id=organisation.account_id,
                 change_id=change_id, changed=changed)
    return {"organisation_id": organisation.account_id, "pending": change_id is not None,
            "change_id": change_id, "changed": changed,
            "changed_labels": labelled(changed), "org_name": name,
            "credit_code": credit_code, "legal_rep_name": rep_name,
            "legal_rep_id": a.sealer.seal(RESIDENT_ID, rep_id),
            "mobile": a.sealer.seal(MOBILE, phone) if phone else None,
            "mobile_masked": mask_mobile(phone) if phone else None}


def _refusing(a: ActionInput, write: Write) -> Write:
    """The unique keys a proposal may hit: a live pending change of the organisation
    (409, one at a time), or a credit code another organisation claimed meanwhile (the
    field's error)."""
    taken = CREDIT_CODE_TAKEN.error(a.params)

    async def guarded(tx: Any) -> None:
        try:
            await write(tx)
        except DuplicateKey as exc:
            if exc.extra.get("constraint") == "certification_changes_one_pending":
                raise CertificationChangePending() from None
            if exc.extra.get("constraint") == "certification_changes_pending_credit_code":
                raise ValidationFailed([taken]) from None
            raise

    return guarded


def _audit(a: ActionInput, organisation_id: str, action: str, change_id: str | None,
           changed: list[str] | tuple[str, ...], shown: dict[str, Any],
           **details: Any) -> Write:
    return services(a).accounts.audit(
        actor=a.actor, action=action, target=f"account:{organisation_id}",
        reason="self-service", now=a.now,
        details={"change_id": change_id, "changed": list(changed), "to": shown,
                 "instance_id": a.instance_id, **details})


def certification_change_pending(g: GuardInput) -> bool:
    """The change waits for re-verification (the fact of ``check_certification_change``)."""
    return bool((g.fact("check_certification_change") or {}).get("pending"))


# -- outcomes ---------------------------------------------------------------------------

async def apply_certification_change(a: ActionInput) -> dict[str, Any]:
    """On entering the final state: the change becomes the organisation's data, in the
    step's transaction. A pending one, after re-verification, keeps the organisation
    verified (by the face result this very step recorded, else the deposit)."""
    s = services(a)
    fact = a.fact("check_certification_change", {})
    organisation_id = str(fact.get("organisation_id"))
    organisation = await s.accounts.organisation(organisation_id)
    if organisation is None:
        refuse_as(a, ORGANISATION_GONE)
    rep_id = a.sealer.open(RESIDENT_ID, fact["legal_rep_id"])
    phone = a.sealer.open(MOBILE, fact["mobile"]) if fact.get("mobile") else None
    taken = {"organisations_credit_code_key": CREDIT_CODE_APPLIED.error({})}
    method = None
    if fact.get("pending"):
        method = "face" if "record_face_result" in a.facts else "deposit"
        a.write(refusing_duplicates(s.accounts.apply_change(
            str(fact["change_id"]), verified_by=method,
            note=f"certification change {fact['change_id']}, flow {a.instance_id}",
            now=a.now), taken))
    else:
        a.write(refusing_duplicates(s.accounts.update_certification(
            organisation_id, name=str(fact["org_name"]), credit_code=str(fact["credit_code"]),
            legal_rep_name=str(fact["legal_rep_name"]),
            legal_rep_id_sealed=s.vault.seal(RESIDENT_ID, rep_id),
            legal_rep_id_index=s.vault.index(RESIDENT_ID, rep_id),
            contact_phone_sealed=s.vault.seal(MOBILE, phone) if phone else None,
            contact_phone_index=s.vault.index(MOBILE, phone) if phone else None), taken))
    shown = {"name": fact["org_name"], "credit_code": fact["credit_code"],
             "legal_rep_name": fact["legal_rep_name"],
             "legal_rep_id": mask_resident_id(rep_id),
             "contact_phone": mask_mobile(phone) if phone else None}
    a.write(_audit(a, organisation_id, "change_certification", fact.get("change_id"),
                   fact.get("changed", []), shown, verified_by=method))
    # Once committed, the organisation's sessions show its new name (flows.sessions).
    a.emit(RENAMED, {"account_id": organisation_id})
    log.info("certification_changed", organisation_id=organisation_id,
             change_id=fact.get("change_id"), method=method)
    return {"organisation_id": organisation_id, "method": method,
            "method_label": METHOD_LABELS[method] if method else None,
            "status": _status(organisation.verified), "name": fact["org_name"],
            "changed": list(fact.get("changed", [])),
            "changed_labels": labelled(fact.get("changed", []))}


async def end_certification_change(a: ActionInput) -> dict[str, Any]:
    """On entering a final state: the pending change ends as ``outcome`` says (withdrawn,
    expired), in the step's transaction, and the audit log says so."""
    s = services(a)
    fact = a.fact("check_certification_change", {})
    outcome = str(a.params["outcome"])
    change_id = fact.get("change_id")
    if change_id:
        a.write(s.accounts.end_change(str(change_id), status=outcome, now=a.now))
        a.write(_audit(a, str(fact.get("organisation_id")), f"{outcome}_certification_change",
                       str(change_id), fact.get("changed", []), {}))
    log.info("certification_change_ended", change_id=change_id, outcome=outcome)
    return {"change_id": change_id, "outcome": outcome}


def register(registry: Registry) -> None:
    """Register this module's actions and guards."""
    registry.action(
        "load_certification", params=[],
        results={"organisation_id": "The organisation account's id.",
                 "verified": "Whether it is verified.",
                 "status": "How a page names its status: {zh: 已认证, en: Verified} or "
                           "{zh: 未认证, en: Not verified}.",
                 "name": "Its name.", "credit_code": "Its unified social credit code.",
                 "legal_rep_name": "Its legal representative's name.",
                 "legal_rep_id": "The representative's ID number, sealed (for a sensitive "
                                 "field's value_from; shown masked).",
                 "mobile": "Its contact phone, sealed, or null.",
                 "mobile_masked": "Its contact phone, masked, or null."},
        refusals=[_ORGANISATION_REQUIRED, Refusal.of(CertificationChangePending)],
    )(load_certification)
    registry.action(
        "check_certification_change",
        params=[NAME, CREDIT_CODE, REP_NAME, REP_ID, PHONE, CODE, PURPOSE],
        results={"organisation_id": "The organisation's id.",
                 "pending": "Whether the change waits for re-verification (a verified "
                            "organisation's).",
                 "change_id": "The pending change's id, or null.",
                 "changed": "The data that changes: name, credit_code, legal_rep_name, "
                            "legal_rep_id, contact_phone.",
                 "changed_labels": "The same, as a page names them: [{zh, en}].",
                 "org_name": "The new name.", "credit_code": "The new credit code.",
                 "legal_rep_name": "The new legal representative's name.",
                 "legal_rep_id": "Their ID number, sealed (shown masked).",
                 "mobile": "The new contact phone, sealed, or null.",
                 "mobile_masked": "It, masked, or null."},
        refusals=[_ORGANISATION_REQUIRED, UNCHANGED, CREDIT_CODE_TAKEN, CODE_NEEDED,
                  BAD_PHONE, *CODE_REFUSALS.values(), REALNAME_MISMATCH,
                  Refusal.of(CertificationChangePending)],
    )(check_certification_change)
    registry.action(
        "apply_certification_change", params=[],
        results={"organisation_id": "The organisation changed.",
                 "method": "How it was verified again: face or deposit (null: it was not "
                           "verified, the change applied at once).",
                 "method_label": "The same, as a page names it: {zh, en}, or null.",
                 "status": "Its status, as a page names it: {zh, en}.",
                 "name": "Its name now.", "changed": "The data that changed.",
                 "changed_labels": "The same, as a page names them: [{zh, en}]."},
        refusals=[ORGANISATION_GONE, CREDIT_CODE_APPLIED])(apply_certification_change)
    registry.action(
        "end_certification_change", params=[OUTCOME],
        results={"change_id": "The pending change ended, or null (none was pending).",
                 "outcome": "withdrawn or expired."},
        refusals=[])(end_certification_change)
    registry.guard("certification_change_pending", params=[])(certification_change_pending)
