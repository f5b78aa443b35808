"""Organisation real-name verification (SPEC 5): legal representative's face, or a deposit.

Only a signed-in organisation that is not yet verified may start it: the initial
state's ``load_organisation`` refuses anyone else, and puts the legal representative's
name and ID number (sealed: never in clear in history) where the face step reads them.

The micro-deposit: ``account_details`` checks that the branch code is one of the
directory's (typed text is refused); entering ``awaiting_deposit`` sends the deposit
and links its id to this instance, so the provider's signed callback finds it. The
credited amount is recorded only as a keyed HMAC (the vault's index key), bound to the
deposit id: history shows that money arrived, never how much. The user's amount is
compared with it; the policy ``attempts.deposit_tries`` bounds the wrong ones, and the
state's 72-hour timeout ends the attempt whether or not anybody visits the flow.
"""

from __future__ import annotations

import hmac
from typing import Any, ClassVar

import structlog

from engine import ActionInput, EngineError, GuardInput, Registry, instance_ref
from flows.identity import bank_account, mask_bank_account
from flows.pii import RESIDENT_ID
from flows.policies import AttemptsPolicy
from flows.support import refuse, services

log = structlog.get_logger("flows.verification")

ACCOUNT_PREFIX = "account:"
VERIFIED = ("已认证", "verified")


class OrganisationRequired(EngineError, PermissionError):
    """Somebody other than a signed-in organisation account tried to start it."""

    status: ClassVar[int] = 403
    error_id: ClassVar[str] = "organisation_account_required"
    zh: ClassVar[str] = "只有已登录的企业（法人）账号可以进行企业实名认证"
    en: ClassVar[str] = "Only a signed-in organisation account can verify an organisation"


class OrganisationAlreadyVerified(EngineError, ValueError):
    status: ClassVar[int] = 409
    error_id: ClassVar[str] = "organisation_already_verified"
    zh: ClassVar[str] = "该企业已完成实名认证"
    en: ClassVar[str] = "This organisation is already verified"


# -- start: who may verify, and whose face --------------------------------------------

async def load_organisation(a: ActionInput) -> dict[str, Any] | None:
    """On entering choose_method at start: an unverified organisation, its representative.

    Re-entering the state later (back, expiry, too many wrong amounts) records nothing
    new: the organisation was checked when the flow started.
    """
    if a.trigger != "start":
        return None
    s = services(a)
    account = None
    if a.actor.startswith(ACCOUNT_PREFIX):
        account = await s.accounts.by_id(a.actor.removeprefix(ACCOUNT_PREFIX))
    organisation = None
    if account is not None and account.kind == "organisation":
        organisation = await s.accounts.organisation(account.id)
    if account is None or organisation is None:
        raise OrganisationRequired()
    if organisation.verified:
        raise OrganisationAlreadyVerified()
    rep_id = s.vault.open(RESIDENT_ID, organisation.legal_rep_id_sealed)
    return {"organisation_id": account.id, "name": organisation.name,
            "credit_code": organisation.credit_code,
            "legal_rep_name": organisation.legal_rep_name,
            # Sealed like a sensitive field: the face step opens it with a.value().
            "legal_rep_id": a.sealer.seal("resident_id", rep_id)}


def chose_face(g: GuardInput) -> bool:
    return g.input.get("method") == "face"


# -- micro-deposit --------------------------------------------------------------------

async def check_branch(a: ActionInput) -> dict[str, Any]:
    """Action: the branch is one of the directory's, picked from the search results."""
    code = str(a.input.get("branch_code") or "").strip()
    branch = await services(a).providers.branches.get(code) if code.isdigit() else None
    if branch is None:
        refuse("branch_code", "branch_unknown",
               "请输入网点名称的一部分进行搜索，并从列表中选择开户网点（不接受手工填写）",
               "Search by part of the branch name and pick the branch from the list; "
               "typed text is not accepted")
    return {"branch_code": branch.code, "branch_name": branch.name, "bank": branch.bank}


async def send_verification_deposit(a: ActionInput) -> dict[str, Any]:
    """On entering awaiting_deposit: pay the random amount, remember the deposit id."""
    s = services(a)
    account_number = bank_account(str(a.value("account_number")))
    branch_code = str(a.value("branch_code"))
    deposit_id = await s.providers.payment.send_deposit(
        account_number, branch_code, callback_url=f"{s.public_url}/api/callbacks/payment",
        idempotency_key=a.idempotency_key)
    a.write(s.accounts.link_provider_ref("payment", deposit_id, a.instance_id, a.now))
    branch = a.fact("check_branch", {})
    before = int(a.fact("send_verification_deposit", {}).get("n", 0))
    log.info("verification_deposit_sent", instance=instance_ref(a.instance_id),
             deposit_id=deposit_id)
    return {"deposit_id": deposit_id, "account_number": mask_bank_account(account_number),
            "branch_code": branch_code, "branch_name": branch.get("branch_name"),
            "sent_at": a.now.isoformat(), "n": before + 1}


def _amount_digest(a: ActionInput, deposit_id: str, amount_fen: int) -> str:
    """A keyed HMAC of the amount: 99 possible amounts must not be guessable offline."""
    return services(a).vault.index("deposit_amount", f"{deposit_id}:{amount_fen}").hex()


async def deposit_credit(a: ActionInput) -> dict[str, Any]:
    """Where the current deposit stands.

    On entering awaiting_deposit (after ``send_verification_deposit``): not credited yet.
    On the provider's ``deposit_credited`` callback: credited, with the amount's digest.
    A callback about an earlier deposit of this flow is refused and changes nothing.
    """
    deposit_id = str(a.fact("send_verification_deposit", {}).get("deposit_id"))
    if a.trigger != "deposit_credited":
        return {"deposit_id": deposit_id, "credited": False}
    if a.input.get("deposit_id") != deposit_id:
        refuse("deposit_id", "deposit_not_current", "该笔打款不是当前的认证打款",
               "This deposit is not the one this verification is waiting for")
    status = str(a.input.get("status") or "")
    if status != "credited":
        return {"deposit_id": deposit_id, "credited": False, "status": status}
    amount = int(a.input["amount_fen"])
    return {"deposit_id": deposit_id, "credited": True, "status": status,
            "amount_digest": _amount_digest(a, deposit_id, amount)}


async def check_deposit_amount(a: ActionInput) -> dict[str, Any]:
    """Action: the amount the user read on the statement against the credited one."""
    deposit_id = str(a.fact("send_verification_deposit", {}).get("deposit_id"))
    credit = a.fact("deposit_credit", {})
    if credit.get("deposit_id") != deposit_id or not credit.get("credited"):
        refuse("amount", "deposit_not_credited", "打款尚未到账，请稍后再试",
               "The deposit has not arrived yet; try again in a moment")
    right = hmac.compare_digest(_amount_digest(a, deposit_id, int(a.input["amount"])),
                                str(credit.get("amount_digest")))
    before = a.fact("check_deposit_amount", {})
    wrong = int(before.get("wrong", 0)) if before.get("deposit_id") == deposit_id else 0
    return {"deposit_id": deposit_id, "right": right, "wrong": wrong + (0 if right else 1)}


def amount_right(g: GuardInput) -> bool:
    return bool((g.fact("check_deposit_amount") or {}).get("right"))


def deposit_tries_left(g: GuardInput) -> bool:
    """Fewer wrong amounts for this deposit than the policy allows."""
    wrong = int((g.fact("check_deposit_amount") or {}).get("wrong", 0))
    return wrong < AttemptsPolicy.from_mapping(g.policies.get("attempts")).deposit_tries


# -- verified ---------------------------------------------------------------------------

async def mark_organisation_verified(a: ActionInput) -> dict[str, Any]:
    """On entering verified: the organisation is verified, in the step's transaction."""
    s = services(a)
    organisation_id = str(a.fact("load_organisation", {}).get("organisation_id"))
    method = "face" if a.trigger == "face_result" else "deposit"
    organisation = await s.accounts.organisation(organisation_id)
    if organisation is None:
        refuse(None, "organisation_gone", "企业账号不存在", "The organisation no longer exists")
    if not organisation.verified:  # an administrator may have been quicker: keep theirs
        a.write(s.accounts.mark_verified(organisation_id, by=method,
                                         note=f"flow {a.instance_id}", now=a.now))
    log.info("organisation_verified", organisation_id=organisation_id, method=method)
    return {"organisation_id": organisation_id, "method": method, "status": VERIFIED[0],
            "status_en": VERIFIED[1]}


def register(registry: Registry) -> None:
    """Register this module's actions and guards."""
    for fn in (load_organisation, check_branch, send_verification_deposit, deposit_credit,
               check_deposit_amount, mark_organisation_verified):
        registry.action(fn.__name__)(fn)
    for guard in (chose_face, amount_right, deposit_tries_left):
        registry.guard(guard.__name__)(guard)
