"""Image captchas: single use, bound to one flow instance, case-insensitive, rendered off
the event loop, and the action that refuses a step on a wrong answer."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import redis.asyncio as aioredis

from engine import ActionInput, FrozenClock, Registry, ValidationFailed
from flows import captcha
from flows.captcha import ALPHABET, CAPTCHA_EXPIRED, CAPTCHA_WRONG, CaptchaAnswers, Captchas
from storage.ephemeral import RedisEphemeral

JPEG_SIGNATURE = b"\xff\xd8\xff"
INSTANCE = "0b7c2a9e-8d1f-4c55-9a70-3f2e1d0c9b8a"
OTHER = "6f1d3c2b-1a09-4e8f-b7d6-5c4b3a291807"


class Drawn:
    """Wrap the renderer: remember each text drawn and the thread that drew it."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.threads: list[threading.Thread] = []
        self._render = captcha._render

    def __call__(self, text: str) -> bytes:
        self.texts.append(text)
        self.threads.append(threading.current_thread())
        return self._render(text)

    @property
    def last(self) -> str:
        return self.texts[-1]


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> Drawn:
    d = Drawn()
    monkeypatch.setattr(captcha, "_render", d)
    return d


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="captcha-test")
    yield pool
    pool.shutdown(wait=True)


@pytest.fixture
def eph(redis_client: aioredis.Redis, redis_prefix: str) -> RedisEphemeral:
    return RedisEphemeral(redis_client, redis_prefix)


@pytest.fixture
def captchas(eph: RedisEphemeral, executor: ThreadPoolExecutor) -> Captchas:
    return Captchas(eph, executor=executor)


async def test_right_answer_passes_once(captchas: Captchas, drawn: Drawn) -> None:
    await captchas.new(INSTANCE)
    assert await captchas.check(INSTANCE, drawn.last) is None
    assert await captchas.check(INSTANCE, drawn.last) == CAPTCHA_EXPIRED


async def test_wrong_answer_is_refused_and_uses_the_captcha_up(captchas: Captchas,
                                                               drawn: Drawn) -> None:
    await captchas.new(INSTANCE)
    wrong = "".join(ALPHABET[(ALPHABET.index(ch) + 1) % len(ALPHABET)] for ch in drawn.last)
    assert await captchas.check(INSTANCE, wrong) == CAPTCHA_WRONG
    assert await captchas.check(INSTANCE, drawn.last) == CAPTCHA_EXPIRED


async def test_expired_or_never_fetched_is_expired(captchas: Captchas, eph: RedisEphemeral,
                                                   drawn: Drawn) -> None:
    assert await captchas.check(INSTANCE, "ABCD") == CAPTCHA_EXPIRED
    await captchas.new(INSTANCE)
    await eph.delete(f"captcha:{INSTANCE}")  # what Redis does when the TTL runs out
    assert await captchas.check(INSTANCE, drawn.last) == CAPTCHA_EXPIRED


async def test_lives_two_minutes_by_default(captchas: Captchas, eph: RedisEphemeral,
                                            drawn: Drawn) -> None:
    await captchas.new(INSTANCE)
    left = await eph.ttl(f"captcha:{INSTANCE}")
    assert left is not None
    assert timedelta(seconds=110) < left <= timedelta(minutes=2)


async def test_a_short_ttl_is_kept(eph: RedisEphemeral, drawn: Drawn) -> None:
    short = Captchas(eph, ttl=timedelta(seconds=5))
    await short.new(INSTANCE)
    left = await eph.ttl(f"captcha:{INSTANCE}")
    assert left is not None
    assert left <= timedelta(seconds=5)


async def test_a_captcha_of_another_instance_does_not_pass(captchas: Captchas,
                                                           drawn: Drawn) -> None:
    await captchas.new(OTHER)
    assert await captchas.check(INSTANCE, drawn.last) == CAPTCHA_EXPIRED
    assert await captchas.check(OTHER, drawn.last) is None  # and the other is untouched


async def test_a_stored_hash_moved_to_another_instance_does_not_pass(
        captchas: Captchas, eph: RedisEphemeral, drawn: Drawn) -> None:
    await captchas.new(OTHER)
    stored = await eph.get(f"captcha:{OTHER}")
    assert stored is not None
    await eph.put(f"captcha:{INSTANCE}", stored, timedelta(minutes=1))
    assert await captchas.check(INSTANCE, drawn.last) == CAPTCHA_WRONG


@pytest.mark.parametrize("typed", [
    str.lower,
    str.upper,
    lambda text: f"  {text.lower()}\t",
    # Full-width, as a Chinese input method types it, with an ideographic space.
    lambda text: "".join(chr(ord(ch) + 0xFEE0) for ch in text) + "\u3000",
])
async def test_answers_ignore_case_whitespace_and_full_width(captchas: Captchas, drawn: Drawn,
                                                             typed: object) -> None:
    await captchas.new(INSTANCE)
    assert callable(typed)
    assert await captchas.check(INSTANCE, typed(drawn.last)) is None


async def test_a_new_captcha_replaces_the_old_one(captchas: Captchas, drawn: Drawn) -> None:
    await captchas.new(INSTANCE)
    first = drawn.last
    await captchas.new(INSTANCE)
    second = drawn.last
    if first == second:  # one chance in 31^4; draw again rather than fail
        await captchas.new(INSTANCE)
        second = drawn.last
    assert await captchas.check(INSTANCE, first) == CAPTCHA_WRONG
    await captchas.new(INSTANCE)
    assert await captchas.check(INSTANCE, drawn.last) is None


async def test_returns_a_jpeg(captchas: Captchas) -> None:
    image = await captchas.new(INSTANCE)
    assert image.startswith(JPEG_SIGNATURE)
    assert len(image) > 1000


async def test_renders_off_the_event_loop_in_the_given_executor(captchas: Captchas,
                                                                drawn: Drawn) -> None:
    loop_thread = threading.current_thread()
    await captchas.new(INSTANCE)
    assert drawn.threads[-1] is not loop_thread
    assert drawn.threads[-1].name.startswith("captcha-test")


async def test_renders_off_the_event_loop_without_an_executor(eph: RedisEphemeral,
                                                              drawn: Drawn) -> None:
    await Captchas(eph).new(INSTANCE)
    assert drawn.threads[-1] is not threading.current_thread()


async def test_only_a_hash_of_the_answer_is_stored(captchas: Captchas, eph: RedisEphemeral,
                                                   drawn: Drawn) -> None:
    await captchas.new(INSTANCE)
    stored = await eph.get(f"captcha:{INSTANCE}")
    assert stored is not None
    assert len(stored) == 32
    assert drawn.last.encode() not in stored
    assert drawn.last.lower().encode() not in stored


async def test_texts_use_the_alphabet_without_look_alikes(eph: RedisEphemeral,
                                                          drawn: Drawn) -> None:
    assert not set("0O1IlL") & set(ALPHABET)
    five = Captchas(eph, length=5)
    for _ in range(20):
        await five.new(INSTANCE)
    assert all(len(t) == 5 and set(t) <= set(ALPHABET) for t in drawn.texts)
    assert len(set(drawn.texts)) > 1


@pytest.mark.parametrize("length", [3, 9, True, "4"])
def test_refuses_a_bad_length(eph: RedisEphemeral, length: object) -> None:
    with pytest.raises(ValueError, match="length"):
        Captchas(eph, length=length)  # type: ignore[arg-type]


def test_refuses_a_ttl_that_is_not_positive(eph: RedisEphemeral) -> None:
    with pytest.raises(ValueError, match="ttl"):
        Captchas(eph, ttl=timedelta(0))


async def test_non_text_or_huge_answers_are_wrong(captchas: Captchas, drawn: Drawn) -> None:
    await captchas.new(INSTANCE)
    assert await captchas.check(INSTANCE, None) == CAPTCHA_WRONG  # type: ignore[arg-type]
    await captchas.new(INSTANCE)
    assert await captchas.check(INSTANCE, drawn.last * 100) == CAPTCHA_WRONG


# -- the action -----------------------------------------------------------------------


def action_input(captchas: Captchas, clock: FrozenClock, answer: str) -> ActionInput:
    return ActionInput(instance_id=INSTANCE, flow="personal_login", seq=2, state="login",
                       trigger="submit", context={}, input={"captcha": answer},
                       now=clock.now(), services={Captchas: captchas},
                       action="check_captcha", params={"captcha": "captcha"})


def registered() -> Registry:
    registry = Registry()
    captcha.register(registry)
    return registry


async def test_action_passes_a_right_answer_and_records_nothing(
        captchas: Captchas, drawn: Drawn, clock: FrozenClock) -> None:
    await captchas.new(INSTANCE)
    ai = action_input(captchas, clock, drawn.last.lower())
    assert await registered().actions["check_captcha"](ai) is None
    assert ai.outbox == []


@pytest.mark.parametrize(("fetch", "error_id"), [(True, CAPTCHA_WRONG),
                                                 (False, CAPTCHA_EXPIRED)])
async def test_action_refuses_a_wrong_or_missing_captcha_on_its_field(
        captchas: Captchas, drawn: Drawn, clock: FrozenClock, fetch: bool,
        error_id: str) -> None:
    if fetch:
        await captchas.new(INSTANCE)
    wrong = "2222" if not drawn.texts or drawn.last != "2222" else "3333"
    with pytest.raises(ValidationFailed) as info:
        await registered().actions["check_captcha"](action_input(captchas, clock, wrong))
    [error] = info.value.errors
    assert (error.field, error.error_id) == ("captcha", error_id)
    assert error.zh
    assert error.en
    assert info.value.problem()["errors"][0]["error_id"] == error_id


async def test_answers_are_kept_newest_first_per_instance_until_they_expire(
        eph: RedisEphemeral, drawn: Drawn, clock: FrozenClock) -> None:
    answers = CaptchaAnswers(eph, clock)
    captchas = Captchas(eph, answers=answers)
    await captchas.new(INSTANCE)
    first = drawn.last
    clock.advance(timedelta(seconds=30))
    await captchas.new(OTHER)
    await captchas.new(INSTANCE)
    assert [a["answer"] for a in await answers.recent(INSTANCE)] == [drawn.last, first]
    assert [a["instance_id"] for a in await answers.recent()] == [INSTANCE, OTHER, INSTANCE]
    newest = (await answers.recent(INSTANCE))[0]
    assert newest == {"instance_id": INSTANCE, "answer": drawn.last,
                      "at": clock.now().isoformat(),
                      "expires_at": (clock.now() + timedelta(minutes=2)).isoformat()}
    assert await captchas.check(INSTANCE, newest["answer"]) is None
    clock.advance(timedelta(seconds=100))  # the first has expired, the later two not yet
    assert [a["answer"] for a in await answers.recent(INSTANCE)] == [drawn.last]
    assert await eph.ttl(f"sandbox:captchas:{INSTANCE}") <= timedelta(minutes=2)


async def test_without_an_answer_log_only_the_hash_is_kept(
        eph: RedisEphemeral, redis_client: aioredis.Redis, redis_prefix: str,
        drawn: Drawn) -> None:
    await Captchas(eph).new(INSTANCE)
    keys = [k.decode() async for k in redis_client.scan_iter(match=f"{redis_prefix}*")]
    assert keys == [f"{redis_prefix}captcha:{INSTANCE}"]
    stored = await eph.get(f"captcha:{INSTANCE}")
    assert stored is not None
    assert drawn.last.encode() not in stored
    assert drawn.last.lower().encode() not in stored


def test_a_drawn_shape_serves_a_bounded_number_of_images_then_is_drawn_anew() -> None:
    renderer = captcha._Renderer()
    drawn: list[str] = []
    draw_character = renderer._draw_character

    def counting(c: str, *args: object) -> object:
        drawn.append(c)
        return draw_character(c, *args)  # type: ignore[arg-type]

    renderer._draw_character = counting  # type: ignore[method-assign,assignment]
    images = 400
    for _ in range(images):
        renderer.generate_image("A")
    stock = renderer._stock["A"]
    assert len(stock) <= renderer.SHAPES
    assert all(1 <= uses <= renderer.USES for _, uses in stock)
    # Each use either reused a shape or drew one: never more uses than a shape allows.
    assert drawn.count("A") >= images / renderer.USES
    assert drawn.count("A") < images


def test_two_images_of_one_text_differ() -> None:
    assert captcha._render("AB3D") != captcha._render("AB3D")
