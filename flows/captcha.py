"""Image captchas (图形验证码): one per flow instance, single use, two minutes.

``Captchas.new`` draws a random text, renders it as a PNG off the event loop (the
``captcha`` package, on Pillow) and keeps only a hash of the answer in the ephemeral
store, under the flow instance; a new image replaces the previous one. ``check``
takes the stored hash whatever the answer, so every image can be tried once: a wrong
answer means a new image, which is what makes guessing cost a render and a round trip.

The answer is compared ignoring case and surrounding whitespace, and full-width letters
and digits typed with a Chinese input method count as their ASCII forms.

In development (never in production: the composition root gives it no ``answers``)
each answer is also written to ``CaptchaAnswers``, which the sandbox pages show, as the
SMS inbox shows codes: so black-box and browser tests pass captchas as a client would.

The action ``check_captcha`` refuses the step with a field error on ``captcha`` when
the answer is wrong or there is no captcha (expired, never fetched, already used, or
fetched for another instance); it records nothing when the answer is right.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import json
import secrets
import threading
from concurrent.futures import Executor, ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

import structlog
from captcha.image import ImageCaptcha

from engine import ActionInput, Clock, Param, Refusal, Registry, ValidationFailed
from flows.ports import Ephemeral

__all__ = [
    "ALPHABET",
    "CAPTCHA_EXPIRED",
    "CAPTCHA_WRONG",
    "MESSAGES",
    "CaptchaAnswers",
    "Captchas",
    "register",
]

log = structlog.get_logger("flows.captcha")

# Upper-case letters and digits without the look-alikes 0/O, 1/I/L (l): answers are
# compared ignoring case, so each character reads one way only.
ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"

CAPTCHA_WRONG = "captcha_wrong"
CAPTCHA_EXPIRED = "captcha_expired"

MESSAGES: dict[str, tuple[str, str]] = {
    CAPTCHA_WRONG: ("图形验证码不正确，请按新图片重新输入",
                    "The characters do not match the image; enter the ones in the new image"),
    CAPTCHA_EXPIRED: ("图形验证码已失效，请点击图片获取新的验证码",
                      "The image code has expired or was already used; click the image "
                      "for a new one"),
}

# Longer answers cannot be right: refuse them before hashing anything.
_MAX_ANSWER = 64
_MIN_LENGTH, _MAX_LENGTH = 4, 8
# Full-width ASCII (Ａ-Ｚ, ａ-ｚ, ０-９) typed with a Chinese IME, as in flows.identity.
_FULL_WIDTH = {cp: cp - 0xFEE0 for cp in range(0xFF01, 0xFF5F)}

# ImageCaptcha loads its fonts lazily into the instance, and a FreeType face is not
# meant to be shared between threads: one renderer per executor thread.
_local = threading.local()
# By default images are drawn in one thread of their own per process, not the loop's
# shared executor: Pillow lets go of the GIL around every small operation, and with
# several renders at once the threads hand the GIL back and forth. Measured (4 at a
# time): 2.9 ms of CPU an image over 6 threads, 2.3 over 2, 1.8 over one, 1.7 inline.
# One thread draws some 500 images a second, far more than a process signs people in.
_RENDERER: list[ThreadPoolExecutor] = []


def _render_thread() -> ThreadPoolExecutor:
    if not _RENDERER:
        _RENDERER.append(ThreadPoolExecutor(1, thread_name_prefix="captcha"))
    return _RENDERER[0]


def _render(text: str) -> bytes:
    """Draw ``text`` as a PNG. Blocking (tens of ms): runs in an executor thread."""
    renderer: ImageCaptcha | None = getattr(_local, "renderer", None)
    if renderer is None:
        renderer = _local.renderer = ImageCaptcha(width=160, height=60)
    out = io.BytesIO()
    # Level 1 of zlib: half the encoding time of the default (6) for an image 8% larger
    # (about 8 KB): measured, the encoding was a third of the whole render.
    renderer.generate_image(text).save(out, format="png", compress_level=1)
    return out.getvalue()


def _normalise(answer: str) -> str:
    return answer.translate(_FULL_WIDTH).strip().lower()


def _digest(instance_id: str, answer: str) -> bytes:
    # Bound to the instance as well as stored under it, so a value copied to another
    # instance's key does not check. Plain SHA-256: the answer space is small, so this
    # keeps the answer out of a Redis dump at a glance, not from a brute force; what
    # protects a captcha is that it lives two minutes and opens once.
    message = b"captcha\x00" + instance_id.encode("utf-8", "surrogatepass") + b"\x00" \
        + _normalise(answer).encode("utf-8", "surrogatepass")
    return hashlib.sha256(message).digest()


def _key(instance_id: str) -> str:
    return f"captcha:{instance_id}"



class CaptchaAnswers:
    """Development only: each captcha's answer, newest first, for the sandbox pages.

    Kept as long as the captcha itself: a list per instance, and one of the newest
    across instances for the page.
    """

    RECENT = 100
    PER_INSTANCE = 10

    def __init__(self, ephemeral: Ephemeral, clock: Clock,
                 ttl: timedelta = timedelta(minutes=2)) -> None:
        self._ephemeral = ephemeral
        self._clock = clock
        self.ttl = ttl

    async def record(self, instance_id: str, answer: str) -> None:
        now = self._clock.now()
        entry = json.dumps({"instance_id": instance_id, "answer": answer,
                            "at": now.isoformat(),
                            "expires_at": (now + self.ttl).isoformat()}).encode()
        await self._ephemeral.push_many(
            [(f"sandbox:captchas:{instance_id}", entry, self.PER_INSTANCE),
             ("sandbox:captchas", entry, self.RECENT)], ttl=self.ttl)

    async def recent(self, instance_id: str | None = None,
                     limit: int = 20) -> list[dict[str, Any]]:
        """Answers not yet expired, newest first: one instance's, or every instance's."""
        key = f"sandbox:captchas:{instance_id}" if instance_id else "sandbox:captchas"
        now = self._clock.now()
        entries = [json.loads(raw) for raw in await self._ephemeral.items(key, self.RECENT)]
        return [e for e in entries if datetime.fromisoformat(e["expires_at"]) > now][:limit]


class Captchas:
    """Issue and check image captchas bound to flow instances."""

    def __init__(self, ephemeral: Ephemeral, *, ttl: timedelta = timedelta(minutes=2),
                 length: int = 4, executor: Executor | None = None,
                 answers: CaptchaAnswers | None = None) -> None:
        if isinstance(length, bool) or not isinstance(length, int) \
                or not _MIN_LENGTH <= length <= _MAX_LENGTH:
            raise ValueError(f"captcha length must be {_MIN_LENGTH}-{_MAX_LENGTH}, "
                             f"not {length!r}")
        if not isinstance(ttl, timedelta) or ttl <= timedelta(0):
            raise ValueError(f"captcha ttl must be a positive timedelta, not {ttl!r}")
        self._ephemeral = ephemeral
        self.ttl = ttl
        self.length = length
        self._executor = executor
        self.answers = answers

    def __repr__(self) -> str:
        return f"<Captchas length={self.length} ttl={self.ttl}>"

    def _text(self) -> str:
        return "".join(secrets.choice(ALPHABET) for _ in range(self.length))

    async def new(self, instance_id: str) -> bytes:
        """Make a fresh captcha for the instance, replacing any earlier one; return a PNG."""
        if not instance_id:
            raise ValueError("a captcha needs a flow instance id")
        text = self._text()
        loop = asyncio.get_running_loop()
        png = await loop.run_in_executor(self._executor or _render_thread(), _render, text)
        await self._ephemeral.put(_key(instance_id), _digest(instance_id, text), self.ttl)
        if self.answers is not None:
            await self.answers.record(instance_id, text)
        return png

    async def check(self, instance_id: str, answer: str) -> str | None:
        """Use up the instance's captcha; return None if ``answer`` is right, else an error id.

        ``captcha_expired``: none is stored for this instance (expired, never fetched,
        already used, or fetched for another instance). ``captcha_wrong``: it did not
        match; it is used up all the same.
        """
        stored = await self._ephemeral.take(_key(instance_id)) if instance_id else None
        if stored is None:
            return CAPTCHA_EXPIRED
        if not isinstance(answer, str) or len(answer) > _MAX_ANSWER:
            return CAPTCHA_WRONG
        if hmac.compare_digest(stored, _digest(instance_id, answer)):
            return None
        return CAPTCHA_WRONG


FIELD = Param("captcha", "field", "The field that holds the captcha's answer.",
              default="captcha")
REFUSALS = {error_id: Refusal(error_id, zh, en, param="captcha")
            for error_id, (zh, en) in MESSAGES.items()}


async def check_captcha(a: ActionInput) -> None:
    """Action: refuse the step unless the field ``captcha`` answers this instance's image."""
    captchas = a.service(Captchas)
    error_id = await captchas.check(a.instance_id, a.input.get(a.params["captcha"], ""))
    if error_id is not None:
        log.info("captcha_refused", reason=error_id)
        raise ValidationFailed([REFUSALS[error_id].error(a.params)])


def register(registry: Registry) -> None:
    registry.action("check_captcha", params=[FIELD], results={},
                    refusals=REFUSALS.values())(check_captcha)
