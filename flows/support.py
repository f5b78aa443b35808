"""What the platform's actions share: their services, typed, and small helpers."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any, NoReturn

import attrs

from engine import ActionInput, FieldError, Invalid, Refusal, ValidationFailed
from flows.accounts import Account, Accounts
from flows.captcha import Captchas
from flows.identity import (
    mask_bank_account,
    mask_credit_code,
    mask_identifier,
    mask_mobile,
    mask_resident_id,
)
from flows.passwords import (
    MISMATCH,
    POLICY_REFUSALS,
    UNCHANGED,
    Hasher,
    PasswordPolicy,
    check,
)
from flows.pii import Vault
from flows.ports import Ephemeral, Seals
from flows.providers import Providers
from flows.sessions import Sessions
from flows.sms import SmsCodes

# How histories and sessions name a signed-in account (flows.sessions.Session.actor).
ACCOUNT_PREFIX = "account:"


@attrs.frozen
class Services:
    """Everything the composition root hands to actions (``ActionInput.services``)."""

    vault: Vault
    accounts: Accounts
    hasher: Hasher
    sessions: Sessions
    sms_codes: SmsCodes
    captchas: Captchas
    providers: Providers
    ephemeral: Ephemeral
    public_url: str
    seals: Seals

    def by_type(self) -> dict[type, Any]:
        """What the engine hands actions, read with ``ActionInput.service(type)``: the
        building blocks that cannot import this module ask for theirs by type."""
        return {Services: self, Vault: self.vault, SmsCodes: self.sms_codes,
                Captchas: self.captchas}


def services(a: ActionInput) -> Services:
    """The platform's services, typed."""
    return a.service(Services)


def refuse(field: str | None, error_id: str, zh: str, en: str) -> NoReturn:
    """Refuse the step with one field's error: nothing is stored, the step stays."""
    raise ValidationFailed([FieldError(field, error_id, zh, en)])


def refuse_as(a: ActionInput, refusal: Refusal) -> NoReturn:
    """Refuse the step with a refusal the action declares, under its field (or the field
    its parameter names in this use of the action)."""
    raise ValidationFailed([refusal.error(a.params)])


def signed_in_account_id(a: ActionInput) -> str | None:
    """The id of the account that takes this step, if a signed-in account takes it."""
    return a.actor.removeprefix(ACCOUNT_PREFIX) if a.actor.startswith(ACCOUNT_PREFIX) \
        else None


def refuse_invalid(field: str, exc: Invalid) -> NoReturn:
    raise ValidationFailed([FieldError(field, exc.error_id, exc.zh, exc.en)])


def password_policy(a: ActionInput) -> PasswordPolicy:
    return PasswordPolicy.from_mapping(a.policies.get("password"))


def check_new_password(a: ActionInput, *, login_name: str | None) -> str:
    """Both passwords (the fields of the ``password`` and ``confirm`` parameters) equal and
    within the policy; return the password."""
    password = str(a.input.get(a.params["password"]) or "")
    errors = []
    if password != a.input.get(a.params["confirm"]):
        errors.append(MISMATCH.error(a.params))
    try:
        check(password_policy(a), password, login_name=login_name)
    except Invalid as exc:
        refusal = next(r for r in POLICY_REFUSALS if r.error_id == exc.error_id)
        errors.insert(0, refusal.error(a.params, zh=exc.zh, en=exc.en))
    if errors:
        raise ValidationFailed(errors)
    return password


async def replace_password(a: ActionInput, account: Account) -> None:
    """The account's password becomes the new one (``check_new_password``), unless it is
    the one it has; written in the step's transaction."""
    s = services(a)
    password = check_new_password(a, login_name=account.login_name)
    if await s.hasher.verify(account.password_hash, password):
        raise ValidationFailed([UNCHANGED.error(a.params)])
    a.write(s.accounts.set_password(account.id, await s.hasher.hash(password),
                                    must_change=False, now=a.now))


_MASKS = {"resident_id": mask_resident_id, "mobile": mask_mobile,
          "bank_account": mask_bank_account, "credit_code": mask_credit_code,
          "identifier": mask_identifier}


def mask(kind: str, value: str) -> str:
    """Mask a value of a known format; anything else shows its first character only."""
    fn = _MASKS.get(kind)
    if fn is not None:
        return fn(value)
    return (value[:1] + "*" * min(len(value) - 1, 8)) if value else ""


class VaultSealer:
    """The engine's Sealer port on the vault: sensitive fields in history are sealed."""

    def __init__(self, vault: Vault) -> None:
        self.vault = vault

    def seal(self, kind: str, value: str) -> dict[str, str]:
        blob = self.vault.seal(_purpose(kind), value)
        return {"kind": kind, "sealed": base64.b64encode(blob).decode("ascii"),
                "masked": mask(kind, value)}

    def open(self, kind: str, sealed: Mapping[str, str]) -> str:
        return self.vault.open(_purpose(sealed.get("kind", kind)),
                               base64.b64decode(sealed["sealed"]))


def _purpose(kind: str) -> str:
    return "history_" + "".join(ch if ch.isalnum() else "_" for ch in kind.lower())
