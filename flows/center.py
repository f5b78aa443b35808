"""The personal center's page (SPEC 10): who the signed-in account is, what it holds, and
which flows it may start now.

Flows say where they are offered with ``offered_to`` in flows.yaml: the audiences below.
An account belongs to its kind's audience and, for an organisation, to the one of its
verification status too; flows offered to such a narrower audience come first (an
unverified organisation sees ``organisation_verification`` at the top, as SPEC 4 asks of
its first sign-in). The listing is not the gate: each flow's first action still refuses
an account it is not for.

Personal data leaves masked: ID numbers 360***********0071, phones 138****5678. The
organisation's own name, credit code and legal representative's name are its public
registration and are shown whole.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from engine import Flow, Registry
from flows.accounts import CertificationChange
from flows.identity import mask_mobile, mask_resident_id
from flows.pii import MOBILE, RESIDENT_ID
from flows.seals import ORGANISATION_SEALS, fits, listing, name_in_force, seal_kind
from flows.sessions import Session
from flows.support import Services
from flows.verification import METHOD_LABELS, UNVERIFIED, VERIFIED

AUDIENCES = {
    "personal": "Personal accounts.",
    "supervisor": "Supervisor accounts, created by the back office (SPEC 8).",
    "organisation": "Organisation accounts, verified or not.",
    "organisation:verified": "Organisations that passed real-name verification.",
    "organisation:unverified": "Organisations not yet verified (SPEC 4: their first "
                               "sign-in prompts verification).",
    "seal_room": "Accounts that may make one more seal: a person without one, an "
                 "organisation with fewer than its cap; and whose name fits a seal.",
    "seal_holder": "Accounts that hold at least one seal.",
    "primary_agent": "Organisations signed in as their primary agent (SPEC 10.3).",
    "primary_agent_with_agents": "Organisations signed in as their primary agent, with "
                                 "other agents to remove or hand the role to.",
}

# How an organisation was verified (organisations.verified_by): the API's name for it,
# and how a page names it.
METHODS: dict[str, tuple[str, dict[str, str]]] = {
    by: ("manual" if by == "admin" else by, label) for by, label in METHOD_LABELS.items()}


def audiences_of(kind: str, *, verified: bool | None = None, seals: int = 0,
                 primary: bool = False, agents: int = 0,
                 seal_name: str | None = None) -> tuple[str, ...]:
    """The audiences an account belongs to, narrowest first: its kind (with an
    organisation's status), what it may do with seals (``seals``: how many it has;
    ``seal_name``: the name a new one would show, which must fit it), and for an
    organisation signed in as its ``primary`` agent, with its other agents."""
    found: tuple[str, ...] = (kind,)
    if kind == "organisation":
        status = "organisation:verified" if verified else "organisation:unverified"
        found = (status, "organisation")
        if primary:
            found += ("primary_agent",)
            if agents > 1:
                found += ("primary_agent_with_agents",)
    kind_of_seal = seal_kind(kind)
    if kind_of_seal is not None and seals < (ORGANISATION_SEALS if kind_of_seal == "round"
                                             else 1) \
            and (seal_name is None or fits(kind_of_seal, seal_name)):
        found += ("seal_room",)
    if seals:
        found += ("seal_holder",)
    return found


def offered(flows: Iterable[Flow], audiences: tuple[str, ...], *,
            under_way: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The account flows offered to any of ``audiences``: those offered to a narrower
    audience (a kind with a status) first, then in the order of flows.yaml.

    ``under_way`` maps a flow to the instance of it the account must finish (or
    withdraw) before it can start another: such a flow is offered to ``resume``, not to
    ``start``.
    """
    under_way = under_way or {}
    found = []
    for order, flow in enumerate(flows):
        matched = [a for a in flow.offered_to if a in audiences]
        if flow.access != "account" or not matched:
            continue
        narrow = any(":" in a for a in matched)
        found.append((0 if narrow else 1, order, flow))
    return [{"name": flow.name, "version": flow.version,
             "title": flow.title.as_dict() if flow.title else None,
             "start": None if flow.name in under_way else f"/api/flows/{flow.name}",
             "resume": f"/api/flows/{under_way[flow.name]}"
             if flow.name in under_way else None}
            for _, _, flow in sorted(found, key=lambda item: item[:2])]


def _when(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _pending(change: CertificationChange | None) -> dict[str, Any] | None:
    """A certification change waiting for re-verification: what it changes (personal
    data masked), until when, and the instance that carries it on."""
    if change is None:
        return None
    return {"changed": list(change.changed), "new": change.shown,
            "created_at": _when(change.created_at), "expires_at": _when(change.expires_at),
            "flow": change.flow, "instance": f"/api/flows/{change.instance_id}"}


async def _organisation(s: Services, account_id: str, session: Session,
                        now: datetime) -> tuple[dict[str, Any], bool, dict[str, str]]:
    organisation = await s.accounts.organisation(account_id)
    if organisation is None:
        return {}, False, {}
    by = organisation.verified_by or ""
    method = METHODS.get(by.split(":", 1)[0]) if organisation.verified else None
    verification: dict[str, Any] = {
        "status": "verified" if organisation.verified else "unverified",
        "label": VERIFIED if organisation.verified else UNVERIFIED,
        "method": method[0] if method else None,
        "method_label": method[1] if method else None,
        "at": _when(organisation.verified_at) if organisation.verified else None,
    }
    agents = [{"id": agent.id, "name": agent.name,
               "mobile_masked": mask_mobile(s.vault.open(MOBILE, agent.phone_sealed)),
               "primary": agent.is_primary,
               "signed_in": agent.id == session.agent_id}
              for agent in await s.accounts.agents(account_id)]
    change = await s.accounts.pending_change(account_id, now=now)
    contact = s.vault.open(MOBILE, organisation.contact_phone_sealed) \
        if organisation.contact_phone_sealed is not None else None
    return {
        "name": organisation.name,
        "credit_code": organisation.credit_code,
        "legal_representative": {
            "name": organisation.legal_rep_name,
            "id_number_masked": mask_resident_id(
                s.vault.open(RESIDENT_ID, organisation.legal_rep_id_sealed)),
        },
        "contact_mobile_masked": mask_mobile(contact) if contact else None,
        "verification": verification,
        # The data above stays in force until the change is verified and applied.
        "pending_change": _pending(change),
        "agents": agents,
    }, organisation.verified, {change.flow: change.instance_id} if change else {}


async def account_page(s: Services, session: Session, flows: Iterable[Flow], *,
                       now: datetime) -> dict[str, Any]:
    """What ``GET /api/me`` answers for a signed-in session, or {} if its account is gone."""
    account = await s.accounts.by_id(session.account_id)
    if account is None:
        return {}
    page: dict[str, Any] = {
        "id": account.id,
        "kind": account.kind,
        "login_name": account.login_name,
        "display_name": account.display_name,
        "must_change_password": account.must_change_password,
        "id_number_masked": mask_resident_id(s.vault.open(RESIDENT_ID,
                                                          account.id_number_sealed))
        if account.id_number_sealed is not None else None,
        "mobile_masked": mask_mobile(s.vault.open(MOBILE, account.phone_sealed))
        if account.phone_sealed is not None else None,
    }
    held = await s.seals.list(account.id) if seal_kind(account.kind) else []
    page["seals"] = listing(held)
    verified: bool | None = None
    under_way: dict[str, str] = {}
    if account.kind == "organisation":
        page["organisation"], verified, under_way = await _organisation(
            s, account.id, session, now)
    # A seal shows the name it was made with: after a rename it is out of date until
    # it is restyled (change_seal_style draws the name in force).
    in_force = name_in_force(page.get("organisation", {}).get("name")
                             or account.display_name)
    for seal in page["seals"]:
        seal["outdated"] = seal["text"] != in_force
    agents = page.get("organisation", {}).get("agents", [])
    primary = any(a["primary"] and a["signed_in"] for a in agents)
    page["flows"] = offered(flows, audiences_of(account.kind, verified=verified,
                                                seals=len(held), primary=primary,
                                                agents=len(agents), seal_name=in_force),
                            under_way=under_way)
    return page


def register(registry: Registry) -> None:
    """Declare the audiences flows may be offered to."""
    for name, meaning in AUDIENCES.items():
        registry.audience(name, meaning)
