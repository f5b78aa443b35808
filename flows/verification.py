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

from engine import ActionInput, EngineError, GuardInput, Param, Refusal, Registry, instance_ref
from flows.identity import mask_bank_account
from flows.pii import RESIDENT_ID
from flows.policies import AttemptsPolicy
from flows.support import refuse_as, services

log = structlog.get_logger("flows.verification")

ACCOUNT_PREFIX = "account:"
# An organisation's status, and how it was verified (organisations.verified_by), as a
# page names them: one wording wherever they are shown.
VERIFIED = {"zh": "已认证", "en": "Verified"}
UNVERIFIED = {"zh": "未认证", "en": "Not verified"}
METHOD_LABELS = {
    "face": {"zh": "法定代表人刷脸认证", "en": "Face scan of the legal representative"},
    "deposit": {"zh": "对公账户打款认证", "en": "Corporate account deposit"},
    "admin": {"zh": "人工审核认证", "en": "Checked by an administrator"},
}


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


METHOD = Param("field", "field", "The choice field that picks the method.", default="method")
BRANCH = Param("branch", "field", "The field that holds the branch code picked from the "
               "directory's search results.", default="branch_code")
ACCOUNT = Param("account", "field", "The field, entered in an earlier step, that holds the "
                "corporate account number.", default="account_number", scope="flow")
DEPOSIT_BRANCH = Param("branch", "field", "The field, entered in an earlier step, that holds "
                       "the branch code.", default="branch_code", scope="flow")
AMOUNT = Param("amount", "field", "The field that holds the amount read on the statement "
               "(format amount_fen).", default="amount")
BRANCH_UNKNOWN = Refusal("branch_unknown",
                         "请输入网点名称的一部分进行搜索，并从列表中选择开户网点（不接受手工填写）",
                         "Search by part of the branch name and pick the branch from the "
                         "list; typed text is not accepted", param="branch")
NOT_CURRENT = Refusal("deposit_not_current", "该笔打款不是当前的认证打款",
                      "This deposit is not the one this verification is waiting for",
                      field="deposit_id")
NOT_CREDITED = Refusal("deposit_not_credited", "打款尚未到账，请稍后再试",
                       "The deposit has not arrived yet; try again in a moment", param="amount")
ORGANISATION_GONE = Refusal("organisation_gone", "企业账号不存在",
                            "The organisation no longer exists")


# -- start: who may verify, and whose face --------------------------------------------

async def load_organisation(a: ActionInput) -> dict[str, Any] | None:
    """On entering choose_method at start: an unverified organisation, its representative.

    Re-entering the state later (back, expiry, too many wrong amounts) records nothing
    new: the organisation was checked when the flow started, and its fact is recorded.
    """
    if a.fact(a.action) is not None:
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
    return g.input.get(g.params["field"]) == "face"


# -- micro-deposit --------------------------------------------------------------------

async def check_branch(a: ActionInput) -> dict[str, Any]:
    """Action: the branch is one of the directory's, picked from the search results."""
    code = str(a.input.get(a.params["branch"]) or "").strip()
    branch = await services(a).providers.branches.get(code) if code.isdigit() else None
    if branch is None:
        refuse_as(a, BRANCH_UNKNOWN)
    return {"branch_code": branch.code, "branch_name": branch.name, "bank": branch.bank}


async def send_verification_deposit(a: ActionInput) -> dict[str, Any]:
    """On entering awaiting_deposit: pay the random amount, remember the deposit id."""
    s = services(a)
    # Checked and normalised by the form when it was typed.
    account_number = str(a.value(a.params["account"]))
    branch_code = str(a.value(a.params["branch"]))
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

    In the step that sent the deposit (``send_verification_deposit`` before it, in the
    same ``on_enter``): not credited yet. In any later step, the provider's callback
    (``deposit_id``, ``status``, ``amount_fen``): credited, with the amount's digest. A
    callback about an earlier deposit of this flow is refused and changes nothing.
    """
    deposit_id = str(a.fact("send_verification_deposit", {}).get("deposit_id"))
    if "send_verification_deposit" in a.facts:
        return {"deposit_id": deposit_id, "credited": False}
    if a.input.get("deposit_id") != deposit_id:
        refuse_as(a, NOT_CURRENT)
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
        refuse_as(a, NOT_CREDITED)
    amount = int(a.input[a.params["amount"]])
    right = hmac.compare_digest(_amount_digest(a, deposit_id, amount),
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
    # How it was verified: by the face result this very step recorded, else the deposit.
    method = "face" if "record_face_result" in a.facts else "deposit"
    organisation = await s.accounts.organisation(organisation_id)
    if organisation is None:
        refuse_as(a, ORGANISATION_GONE)
    if not organisation.verified:  # an administrator may have been quicker: keep theirs
        a.write(s.accounts.mark_verified(organisation_id, by=method,
                                         note=f"flow {a.instance_id}", now=a.now))
    log.info("organisation_verified", organisation_id=organisation_id, method=method)
    return {"organisation_id": organisation_id, "method": method,
            "method_label": METHOD_LABELS[method], "status": dict(VERIFIED)}


def register(registry: Registry) -> None:
    """Register this module's actions and guards."""
    registry.action(
        "load_organisation", params=[],
        results={"organisation_id": "The organisation account's id.",
                 "name": "The organisation's name.",
                 "credit_code": "Its unified social credit code.",
                 "legal_rep_name": "Its legal representative's name.",
                 "legal_rep_id": "The representative's ID number, sealed (for a locked "
                                 "sensitive field's value_from; shown masked)."},
        refusals=[Refusal(e.error_id, e.zh, e.en)
                  for e in (OrganisationRequired, OrganisationAlreadyVerified)],
    )(load_organisation)
    registry.action("check_branch", params=[BRANCH],
                    results={"branch_code": "The branch's code.",
                             "branch_name": "Its name.", "bank": "Its bank."},
                    refusals=[BRANCH_UNKNOWN])(check_branch)
    registry.action(
        "send_verification_deposit", params=[ACCOUNT, DEPOSIT_BRANCH],
        results={"deposit_id": "The provider's id of the deposit.",
                 "account_number": "The account paid, masked.",
                 "branch_code": "The branch's code.", "branch_name": "Its name.",
                 "sent_at": "When it was sent.",
                 "n": "How many deposits this flow has sent, this one included."},
        refusals=[])(send_verification_deposit)
    registry.action(
        "deposit_credit", params=[],
        results={"deposit_id": "The deposit this is about.",
                 "credited": "Whether the money arrived.",
                 "status": "The provider's status of it.",
                 "amount_digest": "A keyed hash of the amount (never the amount)."},
        refusals=[NOT_CURRENT])(deposit_credit)
    registry.action(
        "check_deposit_amount", params=[AMOUNT],
        results={"deposit_id": "The deposit the amount was checked against.",
                 "right": "Whether the amount is the one credited.",
                 "wrong": "Wrong amounts for this deposit so far."},
        refusals=[NOT_CREDITED])(check_deposit_amount)
    registry.action(
        "mark_organisation_verified", params=[],
        results={"organisation_id": "The organisation verified.",
                 "method": "face or deposit.",
                 "method_label": "The same, as a page names it: {zh, en}.",
                 "status": "{zh: 已认证, en: Verified}."},
        refusals=[ORGANISATION_GONE])(mark_organisation_verified)
    registry.guard("chose_face", params=[METHOD])(chose_face)
    registry.guard("amount_right", params=[])(amount_right)
    registry.guard("deposit_tries_left", params=[])(deposit_tries_left)
