"""Building blocks for a signed-in account's mobile number (SPEC 10.2 "bind phone", 8): is
a number free, and the account's new number.

A number is another account's business until the one asking proves it: put
``check_phone_free`` after the action that checks the number's SMS code, as the
registrations do. ``set_phone`` stores the number as registration does (sealed, and
found through the vault's HMAC index, so the number signs in and resets the password
from then on) and writes the change to the audit log, masked: who, when, from which
number to which.
"""

from __future__ import annotations

from typing import Any

import structlog

from engine import ActionInput, Param, Refusal, Registry
from flows.identity import mask_mobile
from flows.pii import MOBILE
from flows.profile import ACCOUNT_REQUIRED, AccountKindRefused, signed_in_account
from flows.registration import PHONE_REGISTERED, refusing_duplicates
from flows.sms import BAD_PHONE, PHONE, phone_in
from flows.support import refuse_as, services, signed_in_account_id

log = structlog.get_logger("flows.phones")

# The kinds of account a mobile number belongs to (one each: accounts_personal_phone).
PHONE_KINDS = ("personal", "supervisor")

NEW_PHONE = Param("phone", "field", "The field, proven in this step or an earlier one, "
                  "that holds the new mobile number.", default="mobile", scope="flow")
UNCHANGED = Refusal("mobile_unchanged", "新手机号码与当前手机号码相同",
                    "This is the account's number already", param="phone")


async def check_phone_free(a: ActionInput) -> dict[str, Any]:
    """Action: no account has the number in the field ``phone`` but, maybe, the signed-in
    one, which is refused as a change to nothing."""
    s = services(a)
    phone = phone_in(a)
    found = await s.accounts.by_phone_index(s.vault.index(MOBILE, phone))
    if found is not None and found.id == signed_in_account_id(a):
        refuse_as(a, UNCHANGED)
    if found is not None:
        refuse_as(a, PHONE_REGISTERED)
    return {"mobile": mask_mobile(phone)}


async def set_phone(a: ActionInput) -> dict[str, Any]:
    """Action: the number in the field ``phone`` becomes the signed-in account's, sealed and
    indexed; the change is audited. A number taken meanwhile refuses the step."""
    s = services(a)
    account = await signed_in_account(a)
    if account.kind not in PHONE_KINDS:
        raise AccountKindRefused()
    phone = phone_in(a)
    before = mask_mobile(s.vault.open(MOBILE, account.phone_sealed)) \
        if account.phone_sealed is not None else None
    taken = {"accounts_personal_phone": PHONE_REGISTERED.error(a.params)}
    a.write(refusing_duplicates(s.accounts.set_phone(
        account.id, phone_sealed=s.vault.seal(MOBILE, phone),
        phone_index=s.vault.index(MOBILE, phone)), taken))
    a.write(s.accounts.audit(
        actor=a.actor, action="change_phone", target=f"account:{account.id}",
        reason="self-service", now=a.now,
        details={"from": before, "to": mask_mobile(phone), "instance_id": a.instance_id}))
    log.info("phone_changed", account_id=account.id)
    return {"mobile": mask_mobile(phone), "previous": before}


def register(registry: Registry) -> None:
    """Register this module's actions."""
    registry.action("check_phone_free", params=[PHONE],
                    results={"mobile": "The number found free, masked (138****8000)."},
                    refusals=[BAD_PHONE, UNCHANGED, PHONE_REGISTERED])(check_phone_free)
    registry.action("set_phone", params=[NEW_PHONE],
                    results={"mobile": "The account's new number, masked.",
                             "previous": "Its number before, masked, or null."},
                    refusals=[ACCOUNT_REQUIRED, Refusal.of(AccountKindRefused), BAD_PHONE,
                              PHONE_REGISTERED])(set_phone)
