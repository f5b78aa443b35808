"""Image captchas (图形验证码): one per flow instance, single use, two minutes.

``Captchas.new`` draws a random text, renders it as a JPEG off the event loop (the
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
from PIL.Image import Image
from PIL.Image import new as new_image
from PIL.ImageDraw import Draw

from engine import ActionInput, Clock, Param, Refusal, Registry, ValidationFailed
from flows.ports import Batch, Ephemeral

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
_WHITE = (255, 255, 255, 255)
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


class _Renderer(ImageCaptcha):
    """``ImageCaptcha`` whose characters come from a changing stock of drawn shapes.

    Drawing one character (font, rotation, warp) is most of an image's cost, and four
    to eight of them go into each. Here each character keeps up to ``SHAPES`` shapes,
    drawn by the library as it would for an image and stored as coverage masks; an
    image picks one at random for each of its characters and colours it, and a shape
    used ``USES`` times is drawn anew. So a shape is seen in at most ``USES`` images, each
    time at another place, in another colour, among other noise, and the stock keeps
    changing; an image costs about a third of what it did (measured in the commit).
    Everything else (spacing, overlap, noise dots and curve, smoothing) is the
    library's, drawn fresh for every image.
    """

    SHAPES = 12
    USES = 16

    def __init__(self) -> None:
        super().__init__(width=160, height=60)
        self._stock: dict[str, list[list[Any]]] = {}
        self._measure = Draw(new_image("RGB", (1, 1)))

    def _shape(self, c: str) -> Image:
        slots = self._stock.setdefault(c, [])
        i = secrets.randbelow(self.SHAPES)
        if i < len(slots) and slots[i][1] < self.USES:
            slots[i][1] += 1
            mask: Image = slots[i][0]
            return mask
        mask = self._draw_character(c, self._measure, _WHITE).convert("L")
        if i < len(slots):
            slots[i] = [mask, 1]
        else:
            slots.append([mask, 1])
        return mask

    def create_captcha_image(self, chars: str, color: Any, background: Any) -> Image:
        # The library's layout: an optional space before each character, the text
        # centred vertically, each character overlapping the previous by up to a
        # quarter of the average width, the whole squeezed to the image's width.
        shapes: list[Image] = []
        for c in chars:
            if secrets.randbits(32) / 2**32 > self.word_space_probability:
                shapes.append(self._shape(" "))
            shapes.append(self._shape(c))
        text_width = sum(m.size[0] for m in shapes)
        width = max(text_width, self._width)
        image = new_image("RGB", (width, self._height), background)
        # The library pastes a character with the luminance of its colour, doubled,
        # as the mask: dark colours come out lighter. The same, as one table.
        r, g, b = color[:3]
        strength = 1.97 * (r * 299 + g * 587 + b * 114) / 1000 / 255
        table = [min(255, int(v * strength)) for v in range(256)]
        average = int(text_width / len(chars))
        overlap = int(self.word_offset_dx * average)
        offset = int(average * 0.1)
        for mask in shapes:
            w, h = mask.size
            image.paste(color[:3], (offset, int((self._height - h) / 2)), mask.point(table))
            offset = offset + w - secrets.randbelow(overlap + 1)
        if width > self._width:
            image = image.resize((self._width, self._height))
        return image


def _render(text: str) -> bytes:
    """Draw ``text`` as a JPEG. Blocking (about a millisecond): runs in an executor thread."""
    renderer: _Renderer | None = getattr(_local, "renderer", None)
    if renderer is None:
        renderer = _local.renderer = _Renderer()
    out = io.BytesIO()
    # JPEG, as captchas are commonly served: a sixth of the encoding time of a PNG at
    # zlib level 1 (0.08 ms against 0.44) and a third of its size (about 3 KB against 10);
    # the image is noise and smoothed strokes, nothing that must survive losslessly.
    renderer.generate_image(text).save(out, format="jpeg", quality=80)
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
        batch = self._ephemeral.batch()
        self.record_in(batch, instance_id, answer)
        await batch.run()

    def record_in(self, batch: Batch, instance_id: str, answer: str) -> None:
        """``record``, as commands of a batch (two answers, both None)."""
        now = self._clock.now()
        entry = json.dumps({"instance_id": instance_id, "answer": answer,
                            "at": now.isoformat(),
                            "expires_at": (now + self.ttl).isoformat()}).encode()
        batch.push(f"sandbox:captchas:{instance_id}", entry, keep=self.PER_INSTANCE,
                   ttl=self.ttl)
        batch.push("sandbox:captchas", entry, keep=self.RECENT, ttl=self.ttl)

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
        """Make a fresh captcha for the instance, replacing any earlier one; return a JPEG."""
        if not instance_id:
            raise ValueError("a captcha needs a flow instance id")
        text = self._text()
        loop = asyncio.get_running_loop()
        image = await loop.run_in_executor(self._executor or _render_thread(), _render, text)
        # The answer for the sandbox pages goes in the same round trip as the captcha.
        batch = self._ephemeral.batch()
        batch.put(_key(instance_id), _digest(instance_id, text), self.ttl)
        if self.answers is not None:
            self.answers.record_in(batch, instance_id, text)
        await batch.run()
        return image

    async def check(self, instance_id: str, answer: str) -> str | None:
        """Use up the instance's captcha; return None if ``answer`` is right, else an error id.

        ``captcha_expired``: none is stored for this instance (expired, never fetched,
        already used, or fetched for another instance). ``captcha_wrong``: it did not
        match; it is used up all the same.
        """
        stored = await self._ephemeral.take(_key(instance_id)) if instance_id else None
        return self.judge(instance_id, stored, answer)

    def use_up_in(self, batch: Batch, instance_id: str) -> None:
        """``check``'s first half, as a command of a batch: take the instance's captcha
        (its answer: what ``judge`` is given as ``stored``); a batch of the store these
        captchas are kept in. It is used up whatever comes of the batch's other
        commands."""
        if not instance_id:
            raise ValueError("a captcha needs a flow instance id")
        batch.take(_key(instance_id))

    def judge(self, instance_id: str, stored: bytes | None, answer: str) -> str | None:
        """``check``'s second half: whether ``answer`` is the captcha ``stored`` (taken
        for ``instance_id`` by ``use_up_in``); None if it is, else an error id."""
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
