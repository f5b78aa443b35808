"""Building blocks for an account's electronic seals (SPEC 10.1.2, 10.2.1): who holds
which seals, a new seal, a new style, a seal deleted; the formats of a seal's colour and
code.

An organisation holds round seals (its name along the upper rim, a star, an optional
inner text such as 合同专用章 and an optional code along the lower rim), up to
``ORGANISATION_SEALS`` of them, never two identical ones; any agent of the organisation
signed in for it may make, restyle and delete them, and the audit log names the agent.
A person (a personal or a supervisor account) holds one square seal of their name.

The name a seal shows is never typed: it is the organisation's name in force
(``organisations.name``: a pending change of certification info is not in force) or
the person's display name, read again when the seal is made or restyled, and kept with
the seal, so a seal shows what it showed until it is restyled. Each action's fact holds
the seal's content hash (``sealart.content_hash``): the history names exactly what the
seal showed, for a signer added later. This is a seal image, not a GB/T 38540 signed
electronic seal.

The drawing itself is ``flows/sealart.py``; it runs in an executor, off the event loop.
"""

from __future__ import annotations

import asyncio
import unicodedata
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, TypeVar

import structlog

from engine import (
    ActionInput,
    DuplicateKey,
    EngineError,
    Forbidden,
    GuardInput,
    Invalid,
    Param,
    Refusal,
    Registry,
    ValidationFailed,
)
from engine.values import Write
from flows import sealart
from flows.ports import Seal
from flows.profile import ACCOUNT_REQUIRED, signed_in_account
from flows.support import refuse_as, services, signed_in_account_id

log = structlog.get_logger("flows.seals")

T = TypeVar("T")

# Seals one organisation may hold (公章, 合同专用章, 财务专用章, ...).
ORGANISATION_SEALS = 10
# Where a seal's images are served (web/seals.py): stable while the seal exists.
SEAL_PATH = "/api/me/seals/{id}"
ROUND_KINDS = ("organisation",)
SQUARE_KINDS = ("personal", "supervisor")


# -- refusals --------------------------------------------------------------------------

class SealNameUnfit(EngineError, ValueError):
    """The account's name cannot be cut into its kind of seal."""

    status: ClassVar[int] = 409
    error_id: ClassVar[str] = "seal_name_unfit"
    zh: ClassVar[str] = "账号名称无法制成印章：个人印章需为2至4个字的姓名，单位名称不超过40个字"
    en: ClassVar[str] = ("The account's name does not fit a seal: a personal seal takes a "
                         "name of 2-4 characters, a round one at most 40")


class SealLimitReached(EngineError, PermissionError):
    """The account holds as many seals as it may."""

    status: ClassVar[int] = 409
    error_id: ClassVar[str] = "seal_limit_reached"
    zh: ClassVar[str] = "印章数量已达上限：个人可有1枚印章，单位最多10枚"
    en: ClassVar[str] = ("The account holds as many seals as it may: one for a person, "
                         "ten for an organisation")


class NoSeal(EngineError, LookupError):
    """The account has no seal to change or delete."""

    status: ClassVar[int] = 409
    error_id: ClassVar[str] = "no_seal"
    zh: ClassVar[str] = "您还没有印章，请先创建印章"
    en: ClassVar[str] = "The account has no seal yet: create one first"


FONTS_MISSING = Refusal.of(sealart.SealFontsMissing)
NAME_GLYPH_MISSING = Refusal("seal_glyph_missing", "所选字体缺少名称中的字，请换一种字体",
                             "The font has no glyph for a character of the name; pick "
                             "another font", param="font")
TEXT_GLYPH_MISSING = Refusal("seal_glyph_missing", "所选字体缺少内文中的字",
                             "The font has no glyph for a character of the inner text",
                             param="inner_text")
DUPLICATE = Refusal("seal_duplicate", "已有一枚完全相同的印章",
                    "The account has an identical seal already")
LIMIT = Refusal.of(SealLimitReached)
GONE = Refusal("seal_gone", "该印章已被删除", "This seal has been deleted", param="seal")
UNCHANGED = Refusal("seal_style_unchanged", "印章样式没有变化",
                    "The seal would look as it does now")
STYLE_INVALID = Refusal("seal_style_invalid", "印章不能采用这种样式",
                        "A seal of this kind cannot take this style")

# -- parameters -------------------------------------------------------------------------

NEEDS = Param("needs", "enum", "What the account must have to start the flow: `room` for "
              "one more seal (create), a `seal` (change, delete), or `any`.",
              default="any", choices=("any", "room", "seal"))
PICKED = Param("seal", "field", "The choice field that holds the seal picked (one of "
               "load_seal_owner's seals).", default="seal")
PICKED_EARLIER = Param("seal", "field", "The choice field, in this step or an earlier "
                       "one, that holds the seal picked.", default="seal", scope="flow")
SIZE = Param("size", "field", "The choice field that holds the size in millimetres "
             "(38, 40, 42 round; 18, 20, 22 square).", default="size")
COLOUR = Param("colour", "field", "The field that holds the colour (format seal_colour).",
               default="colour")
RIM = Param("rim", "field", "The choice field that holds the rim's (border's) width in "
            "millimetres: 0.8, 1.0, 1.2, 1.4 or 1.6.", default="rim")
FONT = Param("font", "field", "The choice field that holds the font: sans, sans_bold, "
             "serif or serif_bold.", default="font")
INNER_TEXT = Param("inner_text", "field", "The field that holds a round seal's inner text "
                   "(合同专用章), if any; a square seal has none (its form need not have "
                   "the field).", default="inner_text", scope="flow")
CODE = Param("code", "field", "The field that holds a round seal's code along the lower "
             "rim (format seal_code), if any; a square seal has none.", default="code",
             scope="flow")
STYLE_PARAMS = (SIZE, COLOUR, RIM, FONT, INNER_TEXT, CODE)

SEAL_RESULTS = {"seal_id": "The seal's id.",
                "kind": "round or square.",
                "text": "The name the seal shows (the organisation's in force, or the "
                        "person's).",
                "style": "Its style: kind, size_mm, colour, rim_mm, font, inner_text, code.",
                "content_hash": "SHA-256 of the canonical style and text: what it shows.",
                "svg_url": "Where its SVG is served (signed in as its account).",
                "png_url": "Where its PNG (300 dpi) is served."}


# -- formats ----------------------------------------------------------------------------

def seal_colour(value: Any) -> Any:
    """A colour: red, dark_red, blue, black, or #rrggbb; normalised to #rrggbb."""
    found = sealart.colour(value) if isinstance(value, str) else None
    if found is None:
        raise Invalid("seal_colour_invalid", "颜色应为 red、dark_red、blue、black 或 #rrggbb",
                      "A colour is red, dark_red, blue, black or #rrggbb")
    return found


def seal_code(value: Any) -> Any:
    """A seal's code: digits (full-width ones too; spaces and hyphens dropped), at most
    20."""
    text = unicodedata.normalize("NFKC", value) if isinstance(value, str) else ""
    digits = "".join(ch for ch in text if ch not in " -")
    if not (digits.isascii() and digits.isdigit() and len(digits) <= sealart.MAX_CODE):
        raise Invalid("seal_code_invalid", "编码只能由数字组成，最多20位",
                      "A seal's code is digits only, at most 20")
    return digits


# -- what the actions share ----------------------------------------------------------------

async def _off_loop(fn: Callable[..., T], *args: Any) -> T:
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


def seal_kind(account_kind: str) -> str | None:
    """The kind of seal an account holds: round, square, or None (an administrator)."""
    if account_kind in ROUND_KINDS:
        return "round"
    return "square" if account_kind in SQUARE_KINDS else None


def name_in_force(name: str) -> str:
    """The text a seal of ``name`` shows: the name without its spaces."""
    return "".join(name.split())


def fits(kind: str, text: str) -> bool:
    """Whether ``text`` (a name in force) can be drawn on a seal of ``kind``: a round
    seal's rim takes 1 to MAX_NAME characters, a square seal a name of 2 to 4."""
    if kind == "round":
        return 1 <= len(text) <= sealart.MAX_NAME
    return len(text) in sealart.NAME_SUFFIX


async def _owner(a: ActionInput) -> tuple[str, str, str]:
    """The signed-in account's id, seal kind and the name its seal shows, now."""
    account = await signed_in_account(a)
    kind = seal_kind(account.kind)
    if kind is None:
        raise Forbidden("administrators hold no seals")
    if kind == "round":
        organisation = await services(a).accounts.organisation(account.id)
        text = (organisation.name if organisation is not None else account.display_name)
        text = name_in_force(text)
    else:
        text = name_in_force(account.display_name)
    if not fits(kind, text):
        raise SealNameUnfit()
    return account.id, kind, text


def summary(kind: str, text: str, style: Mapping[str, Any]) -> str:
    """How a seal is named in a list: what it shows, and its size."""
    shown = sealart.seal_text(kind, text)
    if style.get("inner_text"):
        shown += f" · {style['inner_text']}"
    return f"{shown}（{style.get('size_mm')}mm）"


def urls(seal_id: str) -> dict[str, str]:
    path = SEAL_PATH.format(id=seal_id)
    return {"svg_url": f"{path}.svg", "png_url": f"{path}.png"}


def listing(seals: Iterable[Seal]) -> list[dict[str, Any]]:
    """The account's seals as ``GET /api/me/seals`` (and the account page) list them."""
    return [{"id": s.id, "kind": s.kind, "summary": summary(s.kind, s.text, s.style),
             "text": s.text, "style": dict(s.style), "content_hash": s.content_hash,
             "created_at": s.created_at.isoformat(), "updated_at": s.updated_at.isoformat(),
             **urls(s.id)} for s in seals]


def _style(a: ActionInput, kind: str) -> sealart.Style:
    """The style the step's fields give, checked; refused under the step if the flow's
    choices offer what a seal of this kind cannot take."""

    def value(param: str) -> str:
        return str(a.value(a.params[param]) or "").strip()

    try:
        return sealart.Style(
            kind=kind, size_mm=int(value("size") or 0), colour=value("colour"),
            rim_mm=value("rim"), font=value("font"),
            inner_text=(value("inner_text") or None) if kind == "round" else None,
            code=(value("code") or None) if kind == "round" else None)
    except ValueError:
        refuse_as(a, STYLE_INVALID)


async def _check_glyphs(a: ActionInput, style: sealart.Style, text: str) -> None:
    """Every character has a glyph in the font; else the field it came from is refused."""
    errors = []
    name = await _off_loop(sealart.missing_glyphs, style.font, sealart.seal_text(style.kind,
                                                                                 text))
    if name:
        errors.append(NAME_GLYPH_MISSING.error(
            a.params, zh=f"所选字体缺少名称中的字：{' '.join(name)}，请换一种字体",
            en=f"The font has no glyph for {' '.join(name)} of the name; pick another font"))
    inner = await _off_loop(sealart.missing_glyphs, style.font, style.inner_text or "")
    if inner:
        errors.append(TEXT_GLYPH_MISSING.error(
            a.params, zh=f"所选字体缺少内文中的字：{' '.join(inner)}",
            en=f"The font has no glyph for {' '.join(inner)} of the inner text"))
    if errors:
        raise ValidationFailed(errors)


# What a seal's write may hit meanwhile, by constraint (storage/seals.py).
CREATE_HITS = {"seals_distinct": DUPLICATE, "seals_one_square": LIMIT, "seals_cap": LIMIT}
RESTYLE_HITS = {"seals_distinct": DUPLICATE}


def _refusing(a: ActionInput, write: Write, hits: Mapping[str, Refusal],
              gone: Refusal | None = None) -> Write:
    """The seal's write, with what it may hit meanwhile as the step's refusals: a unique
    key (``hits``), the seal gone (``gone``)."""

    async def guarded(tx: Any) -> None:
        try:
            await write(tx)
        except DuplicateKey as exc:
            refusal = hits.get(str(exc.extra.get("constraint")))
            if refusal is None:
                raise
            raise ValidationFailed([refusal.error(a.params)]) from None
        except LookupError:
            if gone is None:
                raise
            raise ValidationFailed([gone.error(a.params)]) from None

    return guarded


async def _audit(a: ActionInput, account_id: str, action: str, details: dict[str, Any]) -> None:
    """Write who did what to which seal to the audit log, in the step's transaction; for an
    organisation, which of its agents."""
    s = services(a)
    session = await s.sessions.by_ref(a.session) if a.session else None
    agent = session.agent_id if session is not None and session.account_id == account_id \
        else None
    a.write(s.accounts.audit(actor=a.actor, action=action, target=f"account:{account_id}",
                             reason="self-service", now=a.now,
                             details={**details, "agent_id": agent,
                                      "instance_id": a.instance_id}))


def _fact(seal_id: str, style: sealart.Style, text: str, digest: str) -> dict[str, Any]:
    return {"seal_id": seal_id, "kind": style.kind, "text": text, "style": style.as_dict(),
            "content_hash": digest, **urls(seal_id)}


async def _picked(a: ActionInput, account_id: str) -> Seal:
    seal = await services(a).seals.get(account_id, str(a.value(a.params["seal"]) or ""))
    if seal is None:
        refuse_as(a, GONE)
    return seal


# -- actions and the guard -----------------------------------------------------------------

async def load_seal_owner(a: ActionInput) -> dict[str, Any] | None:
    """On entering the initial state at start: the signed-in account's kind of seal, the
    name it shows, its seals (as choices) and a new seal's style; refused if the account
    lacks what ``needs`` asks for. Re-entered later, it records nothing new."""
    if a.fact(a.action) is not None:
        return None
    if signed_in_account_id(a) is None:
        raise Forbidden("this flow needs a signed-in account")
    account_id, kind, text = await _owner(a)
    seals = await services(a).seals.list(account_id)
    cap = ORGANISATION_SEALS if kind == "round" else 1
    if a.params["needs"] == "room" and len(seals) >= cap:
        raise SealLimitReached()
    if a.params["needs"] == "seal" and not seals:
        raise NoSeal()
    defaults = sealart.DEFAULTS[kind]
    return {"account_id": account_id, "kind": kind, "text": text,
            "shows": sealart.seal_text(kind, text),
            "seals": [{"value": s.id, "label": summary(s.kind, s.text, s.style)}
                      for s in seals],
            "count": len(seals), "cap": cap,
            "style": {"size": str(defaults["size_mm"]), "colour": defaults["colour"],
                      "rim": defaults["rim_mm"], "font": defaults["font"]}}


def seal_is_round(g: GuardInput) -> bool:
    """The signed-in account's seals are round (an organisation's; the fact of
    ``load_seal_owner``)."""
    return (g.fact("load_seal_owner") or {}).get("kind") == "round"


async def pick_seal(a: ActionInput) -> dict[str, Any]:
    """Action: the seal picked in the field ``seal``, still there, and its style as the
    style fields take it (for their ``value_from``)."""
    account = await signed_in_account(a)
    seal = await _picked(a, account.id)
    style = sealart.Style.from_dict(seal.style)
    return {"seal_id": seal.id, "kind": seal.kind, "content_hash": seal.content_hash,
            "summary": summary(seal.kind, seal.text, seal.style),
            "size": str(style.size_mm), "colour": style.colour, "rim": style.rim_mm,
            "font": style.font, "inner_text": style.inner_text, "code": style.code}


async def make_seal(a: ActionInput) -> dict[str, Any]:
    """Action: a new seal of the signed-in account in the style of the step's fields,
    showing its name in force; audited. Refused when a character has no glyph in the
    font, when the account has an identical seal, or no room for one more."""
    s = services(a)
    account_id, kind, text = await _owner(a)
    style = _style(a, kind)
    await _check_glyphs(a, style, text)
    digest = sealart.content_hash(style, text)
    seal_id = str(uuid.uuid4())
    a.write(_refusing(a, s.seals.create(
        seal_id=seal_id, account_id=account_id, kind=kind, text=text,
        style=style.as_dict(), content_hash=digest,
        cap=ORGANISATION_SEALS if kind == "round" else 1, now=a.now), CREATE_HITS))
    await _audit(a, account_id, "create_seal",
                 {"seal_id": seal_id, "kind": kind, "content_hash": digest})
    log.info("seal_created", account_id=account_id, seal_id=seal_id, kind=kind)
    return _fact(seal_id, style, text, digest)


async def restyle_seal(a: ActionInput) -> dict[str, Any]:
    """Action: the seal picked (field ``seal``) takes the style of the step's fields and
    the account's name in force; audited with the hashes before and after."""
    s = services(a)
    account_id, kind, text = await _owner(a)
    seal = await _picked(a, account_id)
    style = _style(a, kind)
    await _check_glyphs(a, style, text)
    digest = sealart.content_hash(style, text)
    if digest == seal.content_hash:
        refuse_as(a, UNCHANGED)
    a.write(_refusing(a, s.seals.restyle(seal_id=seal.id, account_id=account_id, text=text,
                                         style=style.as_dict(), content_hash=digest,
                                         now=a.now), RESTYLE_HITS, GONE))
    await _audit(a, account_id, "change_seal_style",
                 {"seal_id": seal.id, "from": seal.content_hash, "to": digest})
    log.info("seal_restyled", account_id=account_id, seal_id=seal.id)
    return {**_fact(seal.id, style, text, digest), "previous_hash": seal.content_hash}


async def remove_seal(a: ActionInput) -> dict[str, Any]:
    """Action: the seal picked (field ``seal``) is deleted: no longer listed or served;
    audited with its content hash."""
    s = services(a)
    account = await signed_in_account(a)
    seal = await _picked(a, account.id)
    a.write(_refusing(a, s.seals.delete(seal_id=seal.id, account_id=account.id, now=a.now),
                      {}, GONE))
    await _audit(a, account.id, "delete_seal",
                 {"seal_id": seal.id, "content_hash": seal.content_hash})
    log.info("seal_deleted", account_id=account.id, seal_id=seal.id)
    return {"seal_id": seal.id, "content_hash": seal.content_hash,
            "summary": summary(seal.kind, seal.text, seal.style)}


def register(registry: Registry) -> None:
    """Register this module's actions, guard and formats."""
    forbidden = Refusal.of(Forbidden)
    owner_refusals = [forbidden, Refusal.of(SealNameUnfit), ACCOUNT_REQUIRED]
    registry.action(
        "load_seal_owner", params=[NEEDS],
        results={"account_id": "The signed-in account's id.",
                 "kind": "The kind of seal it holds: round (an organisation) or square.",
                 "text": "The name its seals show: the organisation's in force, or the "
                         "person's.",
                 "shows": "The characters of that name as a seal shows them (李四之印).",
                 "seals": "Its seals, as choices: {value: id, label: summary}.",
                 "count": "How many seals it holds.",
                 "cap": "How many it may hold.",
                 "style": "A new seal's style: size, colour, rim, font (for value_from)."},
        refusals=[*owner_refusals, Refusal.of(SealLimitReached), Refusal.of(NoSeal)],
    )(load_seal_owner)
    registry.guard("seal_is_round", params=[])(seal_is_round)
    registry.action(
        "pick_seal", params=[PICKED],
        results={"seal_id": "The seal's id.", "kind": "round or square.",
                 "content_hash": "Its content hash now.",
                 "summary": "What it shows, and its size.",
                 "size": "Its size in millimetres, as the size field takes it.",
                 "colour": "Its colour, #rrggbb.", "rim": "Its rim's width, as text.",
                 "font": "Its font.", "inner_text": "Its inner text, or null.",
                 "code": "Its code, or null."},
        refusals=[ACCOUNT_REQUIRED, GONE])(pick_seal)
    registry.action(
        "make_seal", params=list(STYLE_PARAMS), results=SEAL_RESULTS,
        refusals=[*owner_refusals, STYLE_INVALID, NAME_GLYPH_MISSING, TEXT_GLYPH_MISSING,
                  FONTS_MISSING, DUPLICATE, LIMIT])(make_seal)
    registry.action(
        "restyle_seal", params=[PICKED_EARLIER, *STYLE_PARAMS],
        results={**SEAL_RESULTS, "previous_hash": "The content hash it had before."},
        refusals=[*owner_refusals, GONE, STYLE_INVALID, NAME_GLYPH_MISSING,
                  TEXT_GLYPH_MISSING, FONTS_MISSING, UNCHANGED, DUPLICATE])(restyle_seal)
    registry.action(
        "remove_seal", params=[PICKED_EARLIER],
        results={"seal_id": "The seal's id.",
                 "content_hash": "The content hash it had.",
                 "summary": "What it showed, and its size."},
        refusals=[ACCOUNT_REQUIRED, GONE])(remove_seal)
    registry.validator("seal_colour")(seal_colour)
    registry.validator("seal_code")(seal_code)
