"""The reference web client: pages rendered on the server from the UI descriptions.

One generic renderer draws every step of every flow from the description that
``GET /api/flows/{id}`` returns (``Runtime.view``), so a flow added to flows.yaml
renders without new template code. Forms work without JavaScript: each carries a CSRF
token (double-submit cookie), the instance's version (If-Match semantics) and an
Idempotency-Key, and a step that commits answers with a redirect (Post/Redirect/Get).
"""

from __future__ import annotations

import functools
import hmac
import io
import re
import secrets
import uuid
from collections.abc import Awaitable, Callable, Collection, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp_jinja2
import jinja2
import segno
from aiohttp import web
from multidict import MultiDictProxy

from engine import EngineError, Instance, ValidationFailed
from engine.errors import Forbidden, InstanceNotFound, PreconditionFailed, VersionConflict
from engine.step import on_behalf
from flows.center import account_page
from web.client.messages import LANGUAGES, choose_language, label, local_time, text
from web.keys import CLOCK, RUNTIME, SERVICES, SETTINGS
from web.oidc import OIDC, hall_of
from web.policy import PAGE_CSP
from web.routes import captcha_field, client_address, inline_captcha
from web.sessions import (
    clear_session_cookie,
    device_cookie,
    identities_of,
    session_of,
    session_ref_of,
    session_token,
    set_session_cookie,
    starter_of,
)
from web.views import add_links

HERE = Path(__file__).parent
CSRF_COOKIE = "csrf"
LANG_COOKIE = "lang"
_CSRF = web.RequestKey("client_csrf", str)
_LANG = web.RequestKey("client_lang", str)
# The client's own pages, by the names a final state's next action gives (flows.yaml).
PAGES = {"home": "/", "account": "/account", "admin": "/admin"}
# The data a certification change changes (flows/certification.py), by the catalogue's
# captions of the organisation's data in force on the account page.
CHANGED_CAPTIONS = {"name": "org_name", "credit_code": "credit_code",
                    "legal_rep_name": "legal_rep", "legal_rep_id": "legal_rep_id",
                    "contact_phone": "contact_mobile"}
# Where a browser goes once it signed in for a business system (web/client/signin.py).
CONTINUE_PATH = "/login/continue"
# Which waiting authorization request (web/oidc) the browser is signing in for: set by
# /login, read by the step that signs in. HttpOnly, so no script can swap it.
AUTHORIZE_COOKIE = "authorize"
# What the provider's request ids look like (secrets.token_urlsafe); nothing else is one.
REQUEST_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")
# The flows the home page's sign-in tabs, registration and reset links start.
SIGN_IN = {"personal": ("personal_login", "personal_registration",
                        "personal_password_reset"),
           "legal": ("legal_login", "legal_registration", "legal_password_reset")}

client_routes = web.RouteTableDef()
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def setup_client(app: web.Application) -> None:
    """Mount the client's pages and its static files on ``app``."""
    env = aiohttp_jinja2.setup(app, loader=jinja2.FileSystemLoader(HERE / "templates"),
                               autoescape=True, undefined=jinja2.StrictUndefined)
    env.globals.update(label=label, new_key=lambda: str(uuid.uuid4()))
    env.filters["local_time"] = local_time
    app.add_routes(client_routes)
    app.router.add_static("/static/", HERE / "static", name="client_static")


def signing_in_for(request: web.Request) -> str | None:
    """The authorization request this browser is signing in for, if any."""
    found = request.cookies.get(AUTHORIZE_COOKIE, "")
    return found if REQUEST_ID.fullmatch(found) else None


def _lang(request: web.Request) -> str:
    if _LANG not in request:
        request[_LANG] = choose_language(request.cookies.get(LANG_COOKIE),
                                         request.headers.get("Accept-Language"))
    return request[_LANG]


def _csrf(request: web.Request) -> str:
    """The browser's CSRF token: its cookie, or a new one the answer sets."""
    token = request.cookies.get(CSRF_COOKIE, "")
    if len(token) != 43:
        token = request.get(_CSRF) or secrets.token_urlsafe(32)
        request[_CSRF] = token
    return token


def _check_csrf(request: web.Request, form: MultiDictProxy[Any]) -> None:
    cookie = request.cookies.get(CSRF_COOKIE, "")
    given = form.get("csrf", "")
    if not cookie or not isinstance(given, str) or not hmac.compare_digest(
            cookie.encode(), given.encode("utf-8", "replace")):
        raise _PageError(403, "csrf_refused")


class _PageError(Exception):
    """A page-level refusal, shown as an HTML page in the reader's language."""

    def __init__(self, status: int, key: str, message: dict[str, str] | None = None) -> None:
        super().__init__(key)
        self.status = status
        self.key = key
        self.message = message


def _render(request: web.Request, template: str, context: dict[str, Any], *,
            status: int = 200, csp: str | None = None) -> web.Response:
    lang = _lang(request)
    session = session_of(request)
    base = {"lang": lang, "other_lang": next(x for x in LANGUAGES if x != lang),
            "t": functools.partial(text, lang=lang),
            "L": lambda value, fallback="": label(value, lang, fallback),
            "csrf": _csrf(request), "session": session, "path": request.path_qs,
            "development": request.app[SETTINGS].environment == "development"}
    response = aiohttp_jinja2.render_template(template, request, {**base, **context},
                                              status=status)
    if csp is not None:
        response.headers["Content-Security-Policy"] = csp
    _finish(request, response)
    return response


def _finish(request: web.Request, response: web.StreamResponse) -> None:
    """Cookies every page answer carries; no copy kept by any cache."""
    if _CSRF in request:
        response.set_cookie(CSRF_COOKIE, request[_CSRF], httponly=True, samesite="Strict",
                            path="/", secure=request.app[SETTINGS].cookie_secure)
    response.headers["Cache-Control"] = "no-store"
    device_cookie(request, response)


def _redirect(request: web.Request, location: str) -> web.Response:
    response = web.Response(status=303, headers={"Location": location})
    _finish(request, response)
    return response


def pages(handler: Handler) -> Handler:
    """Answer a refusal with a page in the reader's language, never with JSON."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except _PageError as exc:
            return _render(request, "error.html", {"key": exc.key, "message": exc.message},
                           status=exc.status)
        except EngineError as exc:
            body = exc.problem()
            return _render(request, "error.html", {"key": "error_page",
                                                   "message": body.get("message")},
                           status=int(body["status"]))

    return wrapped


# -- home, language, sign-out ------------------------------------------------------------


@client_routes.get("/")
@pages
async def home(request: web.Request) -> web.StreamResponse:
    session = session_of(request)
    page = await _account(request) if session is not None else None
    hall = hall_of(request.app[OIDC], session) \
        if session is not None and session.kind != "admin" else []
    # The systems' icons are their own addresses: this page may show images from them.
    icons = sorted({origin for entry in hall if (origin := _origin(entry["icon"]))})
    return _render(request, "home.html", {"tab": _tab(request), "tabs": SIGN_IN,
                                          "page": page, "hall": hall, "for_system": None,
                                          "tab_href": "/?tab="},
                   csp=f"{PAGE_CSP}; img-src 'self' {' '.join(icons)}" if icons else None)


def _tab(request: web.Request) -> str:
    tab = request.query.get("tab", "personal")
    return tab if tab in SIGN_IN else "personal"


def _origin(url: object) -> str | None:
    if not isinstance(url, str):
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or \
            not re.fullmatch(r"[A-Za-z0-9.:\[\]-]+", parts.netloc):
        return None  # nothing that could end the policy's source list early
    return f"{parts.scheme}://{parts.netloc}"


@client_routes.get("/lang/{code}")
@pages
async def switch_language(request: web.Request) -> web.StreamResponse:
    code = request.match_info["code"]
    if code not in LANGUAGES:
        raise _PageError(404, "not_found")
    back = request.query.get("next", "/")
    if not back.startswith("/") or back.startswith("//") or "\\" in back:
        back = "/"  # our own pages only: never a way to send someone elsewhere
    response = _redirect(request, back)
    response.set_cookie(LANG_COOKIE, code, samesite="Lax", path="/",
                        max_age=365 * 86400, secure=request.app[SETTINGS].cookie_secure)
    return response


@client_routes.post("/signout")
@pages
async def logout(request: web.Request) -> web.StreamResponse:
    _check_csrf(request, await request.post())
    token = session_token(request)
    if token:
        await request.app[SERVICES].sessions.end(token)
    response = _redirect(request, "/")
    clear_session_cookie(response)
    return response


# -- the personal center -----------------------------------------------------------------


async def _account(request: web.Request) -> dict[str, Any] | None:
    session = session_of(request)
    if session is None:
        return None
    page = await account_page(request.app[SERVICES], session,
                              request.app[RUNTIME].flows.flows.values(),
                              now=request.app[CLOCK].now())
    for offer in page.get("flows", []):
        # The API's addresses, as this client's pages.
        resume = offer.get("resume")
        offer["page"] = f"/f/{resume.rsplit('/', 1)[1]}" if resume else None
    pending = (page.get("organisation") or {}).get("pending_change")
    if pending:
        pending["page"] = f"/f/{pending['instance'].rsplit('/', 1)[1]}"
        # What changes, captioned as the data in force above it is.
        pending["rows"] = [{"name": name, "key": CHANGED_CAPTIONS.get(name),
                             "value": (pending.get("new") or {}).get(name)}
                            for name in pending["changed"]]
    return page or None


@client_routes.get("/account")
@pages
async def account(request: web.Request) -> web.StreamResponse:
    page = await _account(request)
    if page is None:
        return _redirect(request, "/")
    return _render(request, "account.html", {"page": page})


# -- flows -------------------------------------------------------------------------------


@client_routes.get("/flows/{name}/start")
@pages
async def start_page(request: web.Request) -> web.StreamResponse:
    """A page with one button that starts the flow (a link may only ever read); or,
    from a finished instance that offers this flow as its next action (``?from=``), the
    flow's first step itself: see ``_next_of``."""
    flow = request.app[RUNTIME].current(request.match_info["name"])
    if flow.access == "account" and session_of(request) is None:
        return _redirect(request, "/")
    started = await _next_of(request, flow.name)
    if started is not None:
        return _redirect(request, f"/f/{started}")
    return _render(request, "start.html", {"flow": flow, "key": str(uuid.uuid4())})


async def _next_of(request: web.Request, name: str) -> str | None:
    """The instance of flow ``name`` that this browser's finished instance ``?from=``
    goes on to (its final step's ``next``: the password reset's "to sign-in in 6
    seconds"), started on the first GET, and the same one on every GET after.

    A GET that starts a flow, kept safe: it starts nothing for a browser that does not
    hold the finished instance (a crawler, a shared link), nor a flow that step does not
    offer; and its idempotency key is the finished instance's, so a reload, a prefetch
    or the link beside the countdown all land on one instance, and count once against
    the flow's start limits. None: show the start page's button instead."""
    source = request.query.get("from", "")
    if not source or len(source) > 64:
        return None
    runtime = request.app[RUNTIME]
    try:
        finished = await _mine(request, source)
    except (InstanceNotFound, Forbidden):
        return None
    view = await runtime.view(finished)
    if not view["ui"]["final"] or all(n["flow"] != name for n in view["ui"]["next"]):
        return None
    outcome = await runtime.start(
        name, {}, idempotency_key=f"next:{finished.id}:{name}",
        actor=starter_of(request, runtime.current(name).access),
        client=client_address(request), session=session_ref_of(request))
    return outcome.instance.id


@client_routes.post("/flows/{name}/start")
@pages
async def start(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    _check_csrf(request, form)
    runtime = request.app[RUNTIME]
    flow = runtime.current(request.match_info["name"])
    key = form.get("key")
    # The session too, as the API's start passes it: a first step may need to know which
    # of the account's sessions starts it (the agent flows check it is the primary agent's).
    session = session_ref_of(request) if flow.access != "anyone" else None
    outcome = await runtime.start(flow.name, {}, idempotency_key=key if isinstance(
        key, str) and 0 < len(key) <= 200 else None,
        actor=starter_of(request, flow.access), client=client_address(request),
        session=session)
    return _redirect(request, f"/f/{outcome.instance.id}")


async def _mine(request: web.Request, instance_id: str) -> Instance:
    runtime = request.app[RUNTIME]
    instance = await runtime.get(instance_id)
    mine = identities_of(request)
    runtime.check_owner(instance, mine[0], mine[1:])
    return instance


@client_routes.get("/f/{id}/qr.svg")
@pages
async def qr_image(request: web.Request) -> web.StreamResponse:
    """The step's QR code (the face step's ``qr_url``) as SVG, drawn by segno: an image
    of our own origin, as the pages' Content-Security-Policy wants."""
    instance = await _mine(request, request.match_info["id"])
    view = await request.app[RUNTIME].view(instance)
    url = view["ui"]["data"].get("qr_url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise _PageError(404, "not_found")
    buffer = io.BytesIO()
    segno.make(url, error="m").save(buffer, kind="svg", scale=5, border=2)
    return web.Response(body=buffer.getvalue(), content_type="image/svg+xml",
                        headers={"Cache-Control": "no-store"})


def _speculative(request: web.Request) -> bool:
    """Whether the browser loads this ahead of time (``Sec-Purpose: prefetch``, or
    ``prefetch;prerender``; ``Purpose: prefetch`` of older browsers), not for a person
    going to it now."""
    return any("prefetch" in request.headers.get(name, "").lower()
               for name in ("Sec-Purpose", "Purpose"))


async def _step_page(request: web.Request, instance: Instance, *, status: int = 200,
                     errors: list[dict[str, Any]] | None = None,
                     entered: Mapping[str, Any] | None = None,
                     notice: str | None = None,
                     retry_after: int | None = None,
                     once: list[dict[str, Any]] | None = None,
                     searched: Mapping[str, Any] | None = None,
                     retype: Collection[str] = ()) -> web.Response:
    """The instance's step. ``entered``: what was typed, shown again; ``retype``: the
    fields typed but not shown again (secret or personal data), which say so;
    ``searched``: a field's search results (``web/client/search.py``)."""
    runtime = request.app[RUNTIME]
    view = add_links(await runtime.view(instance))
    if _speculative(request) and captcha_field(view) is not None:
        # A browser's prefetch or prerender of a step that shows a captcha would draw a
        # new one, and the one the person is looking at would stop working: refused
        # (browsers drop a speculative load that is not answered 2xx, and load the
        # page for real when the person goes to it).
        return web.Response(status=503, text="not loaded ahead of time",
                            headers={"Retry-After": "0", "Cache-Control": "no-store"})
    # A captcha's picture in the page itself: the browser need not ask for it (the
    # field's address is for the next one). Past the limits of pictures, the address.
    pictured = await inline_captcha(request, instance, view) is not None
    ui = view["ui"]
    errors = errors if errors is not None else view["errors"]
    by_field: dict[str, list[dict[str, Any]]] = {}
    general = []
    names = {f["name"] for f in ui["fields"]}
    for e in errors:
        if e.get("field") in names:
            by_field.setdefault(e["field"], []).append(e)
        else:
            general.append(e)
    qr = None
    qr_url = ui["data"].get("qr_url")
    if isinstance(qr_url, str) and qr_url.startswith(("http://", "https://")):
        qr = f"/f/{instance.id}/qr.svg?v={instance.version}"
    flow = (await runtime.compiled(instance.definition_hash)).flow
    next_actions = []
    for n in ui["next"]:
        # A flow: its start page, which starts it from here at once (``_next_of``).
        href = PAGES.get(n["page"] or "", "/") if n["flow"] is None \
            else f"/flows/{quote(n['flow'])}/start?from={instance.id}"
        next_actions.append({**n, "href": href})
    auto = next((n for n in next_actions if n["after_seconds"]), None)
    primary, inline, buttons = _buttons(ui)
    return _render(request, "step.html", {
        "view": view, "ui": ui, "flow": flow, "errors": general, "by_field": by_field,
        "entered": entered or {}, "notice": notice, "qr": qr, "key": str(uuid.uuid4()),
        "next_actions": next_actions, "auto": auto, "retry_after": retry_after,
        "primary": primary, "inline": inline, "buttons": buttons, "once": once or [],
        "searched": searched or {}, "retype": set(retype),
        "field_labels": {f["name"]: f["label"] for f in ui["fields"]},
        "all_errors": [*general, *(e for v in by_field.values() for e in v)],
    }, status=status, csp=f"{PAGE_CSP}; img-src 'self' data:" if pictured else None)


def _buttons(ui: Mapping[str, Any]) -> tuple[Any, dict[str, list[Any]], list[Any]]:
    """The step's main button (its trigger takes the most fields), the buttons drawn
    beside the one text field they take ("send code" by the phone number), the rest."""
    triggers = ui["triggers"]
    if not triggers:
        return None, {}, []
    primary = max(triggers, key=lambda t: len(t["fields"]))  # the first of equals
    # A locked field too ("send code" to the current phone, shown masked): the script
    # sends it as shown, which the engine takes for the value recorded.
    texts = {f["name"] for f in ui["fields"] if f["type"] in ("string", "integer")
             and f.get("widget") not in ("textarea", "captcha")}
    inline: dict[str, list[Any]] = {}
    buttons = []
    for trig in triggers:
        if trig is not primary and len(trig["fields"]) == 1 and trig["fields"][0] in texts:
            inline.setdefault(trig["fields"][0], []).append(trig)
        else:
            buttons.append(trig)
    return primary, inline, buttons


@client_routes.get("/f/{id}")
@pages
async def show(request: web.Request) -> web.StreamResponse:
    instance = await _mine(request, request.match_info["id"])
    notice = "stale" if request.query.get("stale") else None
    return await _step_page(request, instance, notice=notice)


@client_routes.get("/f/{id}/state")
@pages
async def state(request: web.Request) -> web.StreamResponse:
    """Where the instance is (its version), for a waiting page's script to compare."""
    instance = await _mine(request, request.match_info["id"])
    response = web.json_response({"version": instance.version, "state": instance.state,
                                  "status": instance.status})
    response.headers["Cache-Control"] = "no-store"
    return response


def _input(fields: Any, form: MultiDictProxy[Any]) -> dict[str, Any]:
    """The form's values for a trigger's fields, as the API takes them."""
    raw: dict[str, Any] = {}
    for field in fields:
        if field["locked"]:
            continue  # the recorded value stands; the engine refuses a changed one
        if field["type"] == "boolean":
            raw[field["name"]] = form.get(field["name"]) == "true"
            continue
        value = form.get(field["name"])
        if isinstance(value, str):
            raw[field["name"]] = value
    return raw


@client_routes.post("/f/{id}/{trigger}")
@pages
async def step(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    _check_csrf(request, form)
    runtime = request.app[RUNTIME]
    instance_id, trigger = request.match_info["id"], request.match_info["trigger"]
    instance = await _mine(request, instance_id)
    view = await runtime.view(instance)
    takes = next((t["fields"] for t in view["ui"]["triggers"] if t["trigger"] == trigger),
                 None)
    version = form.get("version")
    if takes is None or not isinstance(version, str) or not version.isdigit() \
            or int(version) != instance.version:
        # Sent from a page of an earlier step (the back button, a second tab), or of this
        # step before a callback or a timer stepped it in place.
        earlier = int(version) if isinstance(version, str) and version.isdigit() \
            and len(version) < 10 and int(version) < instance.version else None
        if earlier is not None:
            replayed = await _replayed(request, instance, earlier, form, trigger)
            if replayed is not None:
                return replayed
        if earlier is None or takes is None \
                or not await _stepped_in_place(request, instance, earlier):
            return _redirect(request, f"/f/{instance.id}?stale=1")
    fields = [f for f in view["ui"]["fields"] if f["name"] in takes]
    raw = _input(fields, form)
    key = form.get("key")
    mine = identities_of(request)
    try:
        outcome = await runtime.advance(
            instance.id, trigger, raw,
            idempotency_key=key if isinstance(key, str) and 0 < len(key) <= 200 else None,
            expected_version=instance.version, client=client_address(request),
            actor=mine[0], also=mine[1:], session=session_ref_of(request))
    except ValidationFailed as exc:
        errors = [e.as_dict() for e in exc.errors]
        return await _step_page(request, instance, status=422, errors=errors,
                                entered=_kept(fields, form))
    except (VersionConflict, PreconditionFailed):
        return _redirect(request, f"/f/{instance.id}?stale=1")
    except EngineError as exc:
        body = exc.problem()
        if body["status"] >= 500 or body["status"] in (403, 404, 410):
            raise
        error = {"field": body.get("field"), "error_id": body["error_id"],
                 **(body.get("message") or {"zh": exc.zh, "en": exc.en})}
        return await _step_page(request, await runtime.get(instance.id),
                                status=int(body["status"]), errors=[error],
                                entered=_kept(fields, form),
                                retry_after=body.get("retry_after"))
    token = outcome.replies.get("session")
    after = f"/f/{instance.id}"
    if isinstance(token, str) and signing_in_for(request) is not None:
        after = CONTINUE_PATH  # back to the system that sent the person to sign in
    once = await _replied_once(request, outcome.instance, outcome.replies)
    response = once or _redirect(request, after)
    if isinstance(token, str):
        set_session_cookie(request, response, token)
    if outcome.replies.get("end_session"):
        clear_session_cookie(response)
    return response


async def _replied_once(request: web.Request, instance: Instance,
                        replies: Mapping[str, Any]) -> web.Response | None:
    """The new step's page itself, if the step's reply carries what its description says
    to show once (a one-time password): the answer to this POST is the only place it
    is ever shown. A reload sends the same key again and gets the step replayed, which
    has no reply: then the page shows the step without it."""
    view = await request.app[RUNTIME].view(instance)
    once = [{**r, "value": replies[r["name"]]} for r in view["ui"]["replies"]
            if isinstance(replies.get(r["name"]), str)]
    if not once:
        return None
    return await _step_page(request, instance, once=once)


async def _replayed(request: web.Request, instance: Instance, version: int,
                    form: MultiDictProxy[Any], trigger: str) -> web.Response | None:
    """A form sent again (a double click whose first answer was lost, a reload): the same
    key gets the first answer, as the API gives it; None: not a replay. Sent with the
    page's own version, nothing else can step: the runtime answers a key it knows before
    it looks at the version, and refuses a stale version before the input."""
    key = form.get("key")
    if isinstance(key, str) and 0 < len(key) <= 200:
        mine = identities_of(request)
        try:
            await request.app[RUNTIME].advance(
                instance.id, trigger, {}, idempotency_key=key,
                expected_version=version, client=client_address(request),
                actor=mine[0], also=mine[1:], session=session_ref_of(request))
        except EngineError:
            pass  # not a replay: a new request from an old page
        else:
            return _redirect(request, f"/f/{instance.id}")
    return None


async def _stepped_in_place(request: web.Request, instance: Instance, version: int) -> bool:
    """Whether every step since the page's ``version`` was a provider's callback or a
    timer that left the instance in the state the page shows (a bank's credit while the
    deposit page waits for the amount): the page's form is still the step's form, and
    what was typed in it is taken, not refused as out of date. A step of a person (this
    one's, in another tab) or a move to another state keeps the page stale."""
    later = (await request.app[RUNTIME].history(instance.id))[version:]
    return bool(later) and all(
        ev.from_state == ev.to_state == instance.state and on_behalf(ev.actor) for ev in later)


def _kept(fields: Any, form: MultiDictProxy[Any]) -> dict[str, Any]:
    """What the user typed, shown again with the errors: never a secret, and personal
    data (an ID or phone number) only ever masked, like every answer's."""
    return {f["name"]: form.get(f["name"]) for f in fields
            if not f["secret"] and not f["sensitive"]
            and isinstance(form.get(f["name"]), str)}


def _not_kept(fields: Any, form: MultiDictProxy[Any]) -> list[str]:
    """The fields typed in that ``_kept`` does not show again: they are typed again."""
    return [f["name"] for f in fields if (f["secret"] or f["sensitive"]) and not f["locked"]
            and isinstance(form.get(f["name"]), str) and form.get(f["name"], "").strip()]
