"""Provider ports: callback signing, the sandbox providers, the branch directory, HTTP.

Sandbox state lives in a real Redis; the HTTP implementations talk to a fake provider
over real HTTP (aiohttp_server).
"""

from __future__ import annotations

import asyncio
import csv
import json
from collections.abc import AsyncIterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import web

from engine import EngineError, FrozenClock
from flows.data.make_branches import check_digit
from flows.providers import (
    DEV_CALLBACK_SECRET,
    CallbackReplayed,
    CallbackSignatureInvalid,
    CallbackSigner,
    CallbackStale,
    CallbackVerifier,
    CsvBranchDirectory,
    Endpoint,
    ProviderBadResponse,
    ProviderError,
    ProviderRefused,
    ProviderTimeout,
    ProviderUnavailable,
    build_providers,
)
from flows.providers.http import (
    HttpBranchDirectory,
    HttpFace,
    HttpPayment,
    HttpRealName,
    HttpSms,
)
from flows.providers.sandbox import (
    CallbackSender,
    SandboxFace,
    SandboxFaceFinished,
    SandboxPayment,
    SandboxRealName,
    SandboxSms,
    Switches,
    parse_pairs,
)
from flows.providers.signing import encode_body, signature
from storage.ephemeral import RedisEphemeral
from web.httpclient import AiohttpClient

SECRET = "test-callback-secret-0123456789"
CSV_FILE = Path(__file__).resolve().parents[2] / "flows" / "data" / "branches.csv"
ID_A = "11010519491231002X"
ID_B = "440524188001010014"


@pytest.fixture
def eph(redis_client: aioredis.Redis, redis_prefix: str) -> RedisEphemeral:
    return RedisEphemeral(redis_client, redis_prefix)


@pytest.fixture
def signer(clock: FrozenClock) -> CallbackSigner:
    return CallbackSigner(SECRET, clock)


@pytest.fixture
def verifier(eph: RedisEphemeral, clock: FrozenClock) -> CallbackVerifier:
    return CallbackVerifier(SECRET, eph, clock)


class RecordingClient:
    """An HttpClient that answers from a list and records what was posted."""

    def __init__(self, *answers: int) -> None:
        self.answers = list(answers) or [200]
        self.posts: list[tuple[str, bytes, dict[str, str]]] = []

    async def post_json(self, url: str, body: bytes, headers: Mapping[str, str], *,
                        timeout: float,  # noqa: ASYNC109 - the port's signature
                        ) -> tuple[int, dict[str, Any]]:
        self.posts.append((url, body, dict(headers)))
        status = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return status, {}


def signed(signer: CallbackSigner, payload: dict[str, Any]) -> tuple[dict[str, str], bytes]:
    body = encode_body(payload)
    return signer.headers(payload["event_id"], body), body


# -- signing -----------------------------------------------------------------------


async def test_a_signed_callback_verifies(signer: CallbackSigner,
                                          verifier: CallbackVerifier) -> None:
    headers, body = signed(signer, {"event_id": "evt_1", "result": "pass"})
    assert headers["X-Signature"].startswith("v1=")
    assert headers["X-Event-Id"] == "evt_1"
    await verifier.verify(headers, body)


async def test_the_signature_is_hmac_sha256_over_timestamp_event_id_and_body(
        signer: CallbackSigner) -> None:
    import hashlib
    import hmac
    headers, body = signed(signer, {"event_id": "evt_1"})
    ts = headers["X-Timestamp"]
    expected = hmac.new(SECRET.encode(), f"{ts}.evt_1.".encode() + body,
                        hashlib.sha256).hexdigest()
    assert headers["X-Signature"] == f"v1={expected}"
    assert signature(SECRET, ts, "evt_1", body) == expected


async def test_headers_are_read_case_insensitively(signer: CallbackSigner,
                                                   verifier: CallbackVerifier) -> None:
    headers, body = signed(signer, {"event_id": "evt_1"})
    await verifier.verify({k.lower(): v for k, v in headers.items()}, body)


async def test_a_tampered_body_is_refused_401(signer: CallbackSigner,
                                              verifier: CallbackVerifier) -> None:
    headers, body = signed(signer, {"event_id": "evt_1", "result": "fail"})
    with pytest.raises(CallbackSignatureInvalid) as err:
        await verifier.verify(headers, body.replace(b"fail", b"pass"))
    assert err.value.status == 401
    assert err.value.problem()["error_id"] == "callback_signature_invalid"
    assert err.value.problem()["message"]["zh"]


async def test_a_wrong_secret_is_refused(clock: FrozenClock,
                                         verifier: CallbackVerifier) -> None:
    headers, body = signed(CallbackSigner("another-secret-entirely", clock),
                           {"event_id": "evt_1"})
    with pytest.raises(CallbackSignatureInvalid):
        await verifier.verify(headers, body)


@pytest.mark.parametrize("missing", ["X-Signature", "X-Timestamp", "X-Event-Id"])
async def test_a_missing_header_is_refused_401(signer: CallbackSigner,
                                               verifier: CallbackVerifier,
                                               missing: str) -> None:
    headers, body = signed(signer, {"event_id": "evt_1"})
    del headers[missing]
    with pytest.raises(CallbackSignatureInvalid) as err:
        await verifier.verify(headers, body)
    assert err.value.status == 401


@pytest.mark.parametrize("value", ["sha256=abc", "v1=", "v1=" + "g" * 64, "", "v1"])
async def test_a_malformed_signature_is_refused(signer: CallbackSigner,
                                                verifier: CallbackVerifier,
                                                value: str) -> None:
    headers, body = signed(signer, {"event_id": "evt_1"})
    headers["X-Signature"] = value
    with pytest.raises(CallbackSignatureInvalid):
        await verifier.verify(headers, body)


async def test_changing_the_signed_event_id_breaks_the_signature(
        signer: CallbackSigner, verifier: CallbackVerifier) -> None:
    headers, body = signed(signer, {"event_id": "evt_1"})
    headers["X-Event-Id"] = "evt_2"
    with pytest.raises(CallbackSignatureInvalid):
        await verifier.verify(headers, body)


@pytest.mark.parametrize("minutes", [6, -6])
async def test_a_timestamp_more_than_five_minutes_off_is_stale_401(
        signer: CallbackSigner, verifier: CallbackVerifier, clock: FrozenClock,
        minutes: int) -> None:
    headers, body = signed(signer, {"event_id": "evt_1"})
    clock.advance(timedelta(minutes=minutes))
    with pytest.raises(CallbackStale) as err:
        await verifier.verify(headers, body)
    assert err.value.status == 401
    assert err.value.error_id == "callback_stale"


async def test_a_timestamp_four_minutes_old_is_fresh(signer: CallbackSigner,
                                                     verifier: CallbackVerifier,
                                                     clock: FrozenClock) -> None:
    headers, body = signed(signer, {"event_id": "evt_1"})
    clock.advance(timedelta(minutes=4))
    await verifier.verify(headers, body)


async def test_a_replayed_event_id_is_refused_409(signer: CallbackSigner,
                                                  verifier: CallbackVerifier) -> None:
    headers, body = signed(signer, {"event_id": "evt_1"})
    await verifier.verify(headers, body)
    with pytest.raises(CallbackReplayed) as err:
        await verifier.verify(headers, body)
    assert err.value.status == 409
    assert err.value.problem()["error_id"] == "callback_replayed"


async def test_an_event_id_is_remembered_across_verifiers_sharing_the_store(
        signer: CallbackSigner, eph: RedisEphemeral, clock: FrozenClock) -> None:
    headers, body = signed(signer, {"event_id": "evt_1"})
    await CallbackVerifier(SECRET, eph, clock).verify(headers, body)
    with pytest.raises(CallbackReplayed):
        await CallbackVerifier(SECRET, eph, clock).verify(headers, body)


async def test_a_forged_request_does_not_burn_the_event_id(
        signer: CallbackSigner, verifier: CallbackVerifier) -> None:
    headers, body = signed(signer, {"event_id": "evt_1", "result": "pass"})
    forged = dict(headers, **{"X-Signature": "v1=" + "0" * 64})
    with pytest.raises(CallbackSignatureInvalid):
        await verifier.verify(forged, body)
    await verifier.verify(headers, body)  # the real one still gets through


async def test_a_stale_replay_does_not_burn_the_event_id(
        signer: CallbackSigner, verifier: CallbackVerifier, clock: FrozenClock) -> None:
    headers, body = signed(signer, {"event_id": "evt_1"})
    clock.advance(timedelta(minutes=10))
    with pytest.raises(CallbackStale):
        await verifier.verify(headers, body)
    fresh, body = signed(signer, {"event_id": "evt_1"})
    await verifier.verify(fresh, body)


async def test_forget_lets_an_event_be_delivered_again(signer: CallbackSigner,
                                                       verifier: CallbackVerifier) -> None:
    headers, body = signed(signer, {"event_id": "evt_1"})
    await verifier.verify(headers, body)
    await verifier.forget("evt_1")
    await verifier.verify(headers, body)


async def test_verify_json_returns_the_body_and_checks_its_event_id(
        signer: CallbackSigner, verifier: CallbackVerifier) -> None:
    headers, body = signed(signer, {"event_id": "evt_1", "result": "pass"})
    assert await verifier.verify_json(headers, body) == {"event_id": "evt_1",
                                                        "result": "pass"}
    body = encode_body({"event_id": "evt_other"})
    with pytest.raises(CallbackSignatureInvalid):
        await verifier.verify_json(signer.headers("evt_2", body), body)


async def test_a_rotated_secret_is_still_accepted(eph: RedisEphemeral,
                                                  clock: FrozenClock) -> None:
    old = CallbackSigner("the-old-secret-000000", clock)
    headers, body = signed(old, {"event_id": "evt_1"})
    verifier = CallbackVerifier(SECRET, eph, clock, previous_secrets=["the-old-secret-000000"])
    await verifier.verify(headers, body)
    both, body2 = signed(CallbackSigner(SECRET, clock), {"event_id": "evt_2"})
    both["X-Signature"] = "v1=" + "0" * 64 + "," + both["X-Signature"]
    await verifier.verify(both, body2)


def test_callback_errors_are_engine_errors_with_a_problem_body() -> None:
    for cls in (CallbackSignatureInvalid, CallbackStale, CallbackReplayed):
        body = cls("x").problem()
        assert issubclass(cls, EngineError)
        assert body["status"] in {401, 409}
        assert set(body["message"]) == {"zh", "en"}


# -- sandbox SMS, registry, face, payment ------------------------------------------------


async def test_sms_same_key_twice_is_one_message(eph: RedisEphemeral,
                                                 clock: FrozenClock) -> None:
    sms = SandboxSms(eph, clock, Switches(eph))
    await sms.send("13800138000", "验证码 123456", idempotency_key="i1:1")
    await sms.send("13800138000", "验证码 123456", idempotency_key="i1:1")
    await sms.send("13900139000", "验证码 654321", idempotency_key="i2:1")
    inbox = await sms.inbox()
    assert [m["text"] for m in inbox] == ["验证码 654321", "验证码 123456"]  # newest first
    assert [m["phone"] for m in await sms.inbox("13800138000")] == ["13800138000"]


async def test_sms_inbox_is_shared_by_processes_through_the_store(
        redis_client: aioredis.Redis, redis_prefix: str, clock: FrozenClock) -> None:
    one, two = (RedisEphemeral(redis_client, redis_prefix) for _ in range(2))
    await SandboxSms(one, clock, Switches(one)).send("13800138000", "hi",
                                                     idempotency_key="k")
    await SandboxSms(two, clock, Switches(two)).send("13800138000", "hi",
                                                     idempotency_key="k")
    assert len(await SandboxSms(two, clock, Switches(two)).inbox()) == 1


async def test_a_provider_switched_down_is_unavailable(eph: RedisEphemeral,
                                                       clock: FrozenClock) -> None:
    switches = Switches(eph)
    sms = SandboxSms(eph, clock, switches)
    await switches.set_down("sms", True)
    with pytest.raises(ProviderUnavailable) as err:
        await sms.send("13800138000", "hi", idempotency_key="k")
    assert err.value.status == 503
    assert err.value.problem()["provider"] == "sms"
    await switches.set_down("sms", False)
    await sms.send("13800138000", "hi", idempotency_key="k")
    assert len(await sms.inbox()) == 1


async def test_registry_matches_unless_configured(eph: RedisEphemeral) -> None:
    registry = SandboxRealName(eph, Switches(eph), [("张三", ID_A)], [ID_B])
    assert await registry.check("李四", ID_A, idempotency_key="k")
    assert not await registry.check("张三", ID_A.lower(), idempotency_key="k")
    assert not await registry.check("王五", ID_B, idempotency_key="k")


async def test_registry_answers_change_at_runtime_in_every_process(
        eph: RedisEphemeral, redis_client: aioredis.Redis, redis_prefix: str) -> None:
    registry = SandboxRealName(eph, Switches(eph))
    other_eph = RedisEphemeral(redis_client, redis_prefix)
    other = SandboxRealName(other_eph, Switches(other_eph))
    assert await other.check("李四", ID_A, idempotency_key="k")
    await registry.add_pair("李四", ID_A)
    assert not await other.check("李四", ID_A, idempotency_key="k")
    await registry.remove_pair("李四", ID_A)
    assert await other.check("李四", ID_A, idempotency_key="k")
    await registry.add_id(ID_B)
    assert not await other.check("任何人", ID_B, idempotency_key="k")
    await registry.remove_id(ID_B)
    assert await other.check("任何人", ID_B, idempotency_key="k")


async def test_registry_reset_restores_the_configured_lists(eph: RedisEphemeral) -> None:
    registry = SandboxRealName(eph, Switches(eph), [("张三", ID_A)])
    await registry.remove_pair("张三", ID_A)
    assert await registry.check("张三", ID_A, idempotency_key="k")
    await registry.reset()
    assert not await registry.check("张三", ID_A, idempotency_key="k")


def test_mismatch_pairs_parse_from_configuration() -> None:
    assert parse_pairs(f"张三:{ID_A}; 李四:{ID_B.lower()}\n") == [("张三", ID_A),
                                                                 ("李四", ID_B)]
    with pytest.raises(ValueError, match="name:id"):
        parse_pairs("张三")


async def test_face_session_same_key_returns_the_same_session(
        eph: RedisEphemeral, clock: FrozenClock, signer: CallbackSigner) -> None:
    client = RecordingClient()
    face = SandboxFace(eph, clock, Switches(eph), CallbackSender(client, signer, clock),
                       "http://dev.test/")
    first = await face.create_session("张三", ID_A, callback_url="http://cb.test/face",
                                      idempotency_key="i:1")
    again = await face.create_session("张三", ID_A, callback_url="http://cb.test/face",
                                      idempotency_key="i:1")
    other = await face.create_session("张三", ID_A, callback_url="http://cb.test/face",
                                      idempotency_key="i:2")
    assert again == first
    assert other.session_id != first.session_id
    assert first.qr_url == f"http://dev.test/sandbox/face/{first.session_id}"
    session = await face.session(first.session_id)
    assert session is not None
    assert session["id_masked"] == "110***********002X"
    assert ID_A not in json.dumps(session)  # the sandbox keeps no full ID number


async def test_face_result_is_sent_signed_and_cannot_change(
        eph: RedisEphemeral, clock: FrozenClock, signer: CallbackSigner,
        verifier: CallbackVerifier) -> None:
    client = RecordingClient(200)
    face = SandboxFace(eph, clock, Switches(eph), CallbackSender(client, signer, clock),
                       "http://dev.test")
    session = await face.create_session("张三", ID_A, callback_url="http://cb.test/face",
                                        idempotency_key="i:1")
    delivery = await face.complete(session.session_id, "fail")
    assert delivery.ok
    url, body, headers = client.posts[0]
    assert url == "http://cb.test/face"
    payload = await verifier.verify_json(headers, body)
    assert payload["session_id"] == session.session_id
    assert payload["result"] == "fail"
    with pytest.raises(SandboxFaceFinished):
        await face.complete(session.session_id, "pass")
    await face.complete(session.session_id, "fail")  # a resend: the same event
    assert json.loads(client.posts[1][1])["event_id"] == payload["event_id"]


async def test_a_face_session_needs_an_http_callback_url(eph: RedisEphemeral,
                                                         clock: FrozenClock,
                                                         signer: CallbackSigner) -> None:
    face = SandboxFace(eph, clock, Switches(eph),
                       CallbackSender(RecordingClient(), signer, clock), "http://dev.test")
    with pytest.raises(EngineError):
        await face.create_session("张三", ID_A, callback_url="file:///etc/passwd",
                                  idempotency_key="k")


@pytest.fixture
async def payment(eph: RedisEphemeral, clock: FrozenClock,
                  signer: CallbackSigner) -> AsyncIterator[tuple[SandboxPayment,
                                                                 RecordingClient]]:
    client = RecordingClient(200)
    p = SandboxPayment(eph, clock, Switches(eph), CallbackSender(client, signer, clock),
                       directory=CsvBranchDirectory.load(), retry_after=0.01)
    yield p, client
    await p.aclose()


async def test_a_deposit_of_1_to_99_fen_is_credited_and_reported_signed(
        payment: tuple[SandboxPayment, RecordingClient], verifier: CallbackVerifier) -> None:
    sandbox, client = payment
    deposit_id = await sandbox.send_deposit("6222020200001234", "102100000097",
                                            callback_url="http://cb.test/pay",
                                            idempotency_key="i:3")
    await sandbox.drain()
    [(_, body, headers)] = client.posts
    event = await verifier.verify_json(headers, body)
    assert event["deposit_id"] == deposit_id
    assert event["status"] == "credited"
    assert 1 <= event["amount_fen"] <= 99
    [line] = await sandbox.statement("6222020200001234")
    assert line["amount_fen"] == event["amount_fen"]
    assert line["deposit_id"] == deposit_id


async def test_same_key_twice_is_one_deposit(
        payment: tuple[SandboxPayment, RecordingClient]) -> None:
    sandbox, client = payment
    ids = {await sandbox.send_deposit("6222020200001234", "102100000097",
                                      callback_url="http://cb.test/pay",
                                      idempotency_key="i:3") for _ in range(3)}
    await sandbox.drain()
    assert len(ids) == 1
    assert len(await sandbox.statement("6222020200001234")) == 1
    assert len(client.posts) == 1


async def test_amounts_cover_the_range_and_stay_within_it(
        payment: tuple[SandboxPayment, RecordingClient]) -> None:
    sandbox, _ = payment
    for n in range(40):
        await sandbox.send_deposit("6222020200005678", "102100000097",
                                   callback_url="http://cb.test/pay", idempotency_key=f"k{n}")
    await sandbox.drain()
    amounts = [line["amount_fen"] for line in await sandbox.statement("6222020200005678")]
    assert len(amounts) == 40
    assert all(1 <= a <= 99 for a in amounts)
    assert len(set(amounts)) > 5  # random, not a constant


async def test_a_deposit_callback_is_retried_after_a_5xx(
        payment: tuple[SandboxPayment, RecordingClient]) -> None:
    sandbox, client = payment
    client.answers = [503, 502, 200]
    deposit_id = await sandbox.send_deposit("6222020200001234", "102100000097",
                                            callback_url="http://cb.test/pay",
                                            idempotency_key="k")
    await sandbox.drain()
    assert len(client.posts) == 3
    assert len({json.loads(b)["event_id"] for _, b, _ in client.posts}) == 1
    deposit = await sandbox.deposit(deposit_id)
    assert deposit is not None
    assert deposit["delivery"]["status"] == 200


async def test_a_delayed_deposit_is_pending_until_credited(
        eph: RedisEphemeral, clock: FrozenClock, signer: CallbackSigner) -> None:
    client = RecordingClient(200)
    sandbox = SandboxPayment(eph, clock, Switches(eph), CallbackSender(client, signer, clock),
                             delay=timedelta(milliseconds=50))
    deposit_id = await sandbox.send_deposit("6222020200001234", "102100000097",
                                            callback_url="http://cb.test/pay",
                                            idempotency_key="k")
    deposit = await sandbox.deposit(deposit_id)
    assert deposit is not None
    assert deposit["status"] == "pending"
    assert await sandbox.statement("6222020200001234") == []
    await sandbox.drain()
    credited = await sandbox.deposit(deposit_id)
    assert credited is not None
    assert credited["status"] == "credited"
    assert len(client.posts) == 1


async def test_a_deposit_to_an_unknown_branch_is_refused(
        payment: tuple[SandboxPayment, RecordingClient]) -> None:
    sandbox, _ = payment
    with pytest.raises(ProviderRefused):
        await sandbox.send_deposit("6222020200001234", "999999999999",
                                   callback_url="http://cb.test/pay", idempotency_key="k")


# -- branch directory -------------------------------------------------------------------


def test_the_shipped_directory_is_large_synthetic_and_well_formed() -> None:
    lines = CSV_FILE.read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("#")
    assert "synthetic" in lines[0].lower()
    rows = list(csv.DictReader(line for line in lines if not line.startswith("#")))
    codes = [r["code"] for r in rows]
    assert len(rows) >= 3000
    assert len(set(codes)) == len(codes)
    assert all(len(c) == 12 and c.isdigit() and check_digit(c[:11]) == c[11] for c in codes)
    assert all(r["name"].startswith(r["bank"]) and r["city"] in r["name"] for r in rows)
    assert len(CsvBranchDirectory.load()) == len(rows)


@pytest.fixture(scope="module")
def directory() -> CsvBranchDirectory:
    return CsvBranchDirectory.load()


@pytest.mark.parametrize("query", ["工商 海淀", "工商银行 北京 海淀", "工行 海淀", "工行海淀",
                                   "ＩＣＢＣ　海淀", "海淀，工商"])
async def test_branch_search_finds_by_parts_of_a_name(directory: CsvBranchDirectory,
                                                      query: str) -> None:
    found = await directory.search(query)
    assert found
    assert found[0].name == "中国工商银行北京海淀支行"
    assert all("海淀" in b.name and b.bank == "中国工商银行" for b in found)


async def test_every_term_must_match(directory: CsvBranchDirectory) -> None:
    found = await directory.search("建设 南宁 青秀", limit=50)
    assert found
    assert all(b.bank == "中国建设银行" and b.city == "南宁" and "青秀" in b.name
               for b in found)
    assert await directory.search("工商 不存在的地方") == []


async def test_branch_search_respects_the_limit_and_ranks_branches_before_outlets(
        directory: CsvBranchDirectory) -> None:
    found = await directory.search("海淀", limit=5)
    assert len(found) == 5
    assert all(b.name.endswith("海淀支行") for b in found)


async def test_branch_search_by_code_prefix(directory: CsvBranchDirectory) -> None:
    found = await directory.search("102100000097")
    assert [b.code for b in found] == ["102100000097"]


async def test_empty_or_punctuation_only_search_finds_nothing(
        directory: CsvBranchDirectory) -> None:
    assert await directory.search("") == []
    assert await directory.search("  ，、 ") == []


async def test_get_by_code(directory: CsvBranchDirectory) -> None:
    branch = await directory.get("102100000097")
    assert branch is not None
    assert (branch.name, branch.bank, branch.city) == ("中国工商银行北京海淀支行",
                                                       "中国工商银行", "北京")
    assert await directory.get("000000000000") is None
    assert await directory.get("中国工商银行北京海淀支行") is None  # free text is no code


def test_a_directory_file_with_a_bad_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "b.csv"
    path.write_text("code,name,bank,city\n12345,某行,某行,北京\n", encoding="utf-8")
    with pytest.raises(ValueError, match="12 digits"):
        CsvBranchDirectory.load(path)


# -- build_providers ---------------------------------------------------------------------


async def test_sandbox_is_the_default(eph: RedisEphemeral, clock: FrozenClock) -> None:
    providers = build_providers({}, ephemeral=eph, http_client=RecordingClient(), clock=clock,
                                base_url="http://dev.test")
    assert providers.sms is providers.sandbox.sms
    assert providers.face is providers.sandbox.face
    assert isinstance(providers.branches, CsvBranchDirectory)
    assert providers.modes == {"sms": "sandbox", "realname": "sandbox", "face": "sandbox",
                               "payment": "sandbox", "branches": "csv"}
    headers, body = signed(CallbackSigner(DEV_CALLBACK_SECRET, clock), {"event_id": "e"})
    await providers.callbacks.verify(headers, body)
    await providers.aclose()


async def test_http_providers_are_chosen_per_service(eph: RedisEphemeral,
                                                     clock: FrozenClock) -> None:
    config = {"SMS_PROVIDER": "http", "SMS_URL": "https://sms.example/v1",
              "SMS_API_KEY": "k", "SMS_TIMEOUT": "2.5",
              "FACE_PROVIDER": "http", "FACE_URL": "https://face.example",
              "FACE_API_KEY": "k", "CALLBACK_SECRET": SECRET,
              "REALNAME_SANDBOX_MISMATCH": f"张三:{ID_A}"}
    providers = build_providers(config, ephemeral=eph, http_client=RecordingClient(),
                                clock=clock, base_url="http://dev.test")
    assert isinstance(providers.sms, HttpSms)
    assert providers.sms.endpoint.timeout == 2.5
    assert isinstance(providers.face, HttpFace)
    assert providers.realname is providers.sandbox.realname
    assert not await providers.realname.check("张三", ID_A, idempotency_key="k")


@pytest.mark.parametrize(("config", "message"), [
    ({"SMS_PROVIDER": "carrier-pigeon"}, "SMS_PROVIDER"),
    ({"SMS_PROVIDER": "http", "SMS_API_KEY": "k"}, "SMS_URL"),
    ({"SMS_PROVIDER": "http", "SMS_URL": "https://x"}, "SMS_API_KEY"),
    ({"PAYMENT_PROVIDER": "http", "PAYMENT_URL": "https://x", "PAYMENT_API_KEY": "k"},
     "CALLBACK_SECRET"),
    ({"FACE_PROVIDER": "http", "FACE_URL": "https://x", "FACE_API_KEY": "k",
      "CALLBACK_SECRET": "short"}, "16"),
    ({"PAYMENT_SANDBOX_DELAY": "soon"}, "PAYMENT_SANDBOX_DELAY"),
    ({"REALNAME_SANDBOX_MISMATCH": "nobody"}, "REALNAME_SANDBOX_MISMATCH"),
])
def test_configuration_mistakes_are_named(eph: RedisEphemeral, clock: FrozenClock,
                                          config: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_providers(config, ephemeral=eph, http_client=RecordingClient(), clock=clock,
                        base_url="http://dev.test")


# -- HTTP implementations against a fake provider ----------------------------------------


class FakeProvider:
    """A provider over real HTTP that answers what the test tells it to."""

    def __init__(self) -> None:
        self.status = 200
        self.answer: Any = {}
        self.delay = 0.0
        self.raw: bytes | None = None
        self.requests: list[tuple[str, dict[str, str], Any]] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.path, dict(request.headers), await request.json()))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.raw is not None:
            return web.Response(body=self.raw, status=self.status, content_type="text/html")
        return web.json_response(self.answer, status=self.status)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self.handle)
        return app


@pytest.fixture
async def fake(aiohttp_server: Any) -> tuple[FakeProvider, str]:
    provider = FakeProvider()
    server = await aiohttp_server(provider.app())
    return provider, str(server.make_url("/v1"))


@pytest.fixture
async def http_client() -> AsyncIterator[AiohttpClient]:
    client = AiohttpClient()
    yield client
    await client.aclose()


def endpoint(service: str, url: str, timeout: float = 2.0) -> Endpoint:
    return Endpoint(service, url, "api-key-1", timeout)


async def test_http_sms_sends_json_with_key_and_idempotency_key(
        fake: tuple[FakeProvider, str], http_client: AiohttpClient) -> None:
    provider, url = fake
    await HttpSms(endpoint("sms", url), http_client).send("13800138000", "验证码 123456",
                                                           idempotency_key="i:1")
    [(path, headers, body)] = provider.requests
    assert path == "/v1/messages"
    assert headers["Authorization"] == "Bearer api-key-1"
    assert headers["Idempotency-Key"] == "i:1"
    assert body == {"phone": "13800138000", "text": "验证码 123456"}


async def test_http_realname_face_payment_read_their_answers(
        fake: tuple[FakeProvider, str], http_client: AiohttpClient) -> None:
    provider, url = fake
    provider.answer = {"match": False}
    assert not await HttpRealName(endpoint("realname", url), http_client).check(
        "张三", ID_A, idempotency_key="k")
    provider.answer = {"session_id": "s1", "qr_url": "https://face.example/s1"}
    session = await HttpFace(endpoint("face", url), http_client).create_session(
        "张三", ID_A, callback_url="https://us.example/cb", idempotency_key="k")
    assert (session.session_id, session.qr_url) == ("s1", "https://face.example/s1")
    provider.answer = {"deposit_id": "d1"}
    assert await HttpPayment(endpoint("payment", url), http_client).send_deposit(
        "6222020200001234", "102100000097", callback_url="https://us.example/cb",
        idempotency_key="k") == "d1"
    assert [r[0] for r in provider.requests] == ["/v1/checks", "/v1/sessions", "/v1/deposits"]
    assert provider.requests[2][2]["branch_code"] == "102100000097"


async def test_http_branch_directory(fake: tuple[FakeProvider, str],
                                     http_client: AiohttpClient) -> None:
    provider, url = fake
    directory = HttpBranchDirectory(endpoint("branches", url), http_client)
    row = {"code": "102100000097", "name": "中国工商银行北京海淀支行", "bank": "中国工商银行",
           "city": "北京"}
    provider.answer = {"branches": [row]}
    assert [b.code for b in await directory.search("工商 海淀")] == ["102100000097"]
    provider.answer = {"branch": row}
    branch = await directory.get("102100000097")
    assert branch is not None
    assert branch.name == row["name"]
    provider.answer = {"branch": None}
    assert await directory.get("000000000000") is None
    provider.status, provider.answer = 404, {}
    assert await directory.get("000000000000") is None


@pytest.mark.parametrize(("status", "error"), [
    (500, ProviderUnavailable), (502, ProviderUnavailable), (503, ProviderUnavailable),
    (429, ProviderUnavailable), (400, ProviderRefused), (401, ProviderRefused),
    (404, ProviderRefused),
])
async def test_http_error_statuses_become_provider_errors(
        fake: tuple[FakeProvider, str], http_client: AiohttpClient, status: int,
        error: type[ProviderError]) -> None:
    provider, url = fake
    provider.status, provider.raw = status, b"<html>Bad Gateway</html>"
    with pytest.raises(error) as err:
        await HttpSms(endpoint("sms", url), http_client).send("13800138000", "x",
                                                               idempotency_key="k")
    problem = err.value.problem()
    assert problem["status"] in {502, 503}
    assert problem["error_id"] in {"provider_unavailable", "provider_refused"}
    assert problem["provider"] == "sms"
    assert url not in json.dumps(problem)  # the provider's address stays private


async def test_a_slow_provider_times_out_as_503(fake: tuple[FakeProvider, str],
                                               http_client: AiohttpClient) -> None:
    provider, url = fake
    provider.delay = 1.0
    with pytest.raises(ProviderTimeout) as err:
        await HttpRealName(endpoint("realname", url, timeout=0.2), http_client).check(
            "张三", ID_A, idempotency_key="k")
    assert err.value.status == 503
    assert err.value.error_id == "provider_timeout"


async def test_an_unreachable_provider_is_unavailable(http_client: AiohttpClient) -> None:
    with pytest.raises(ProviderUnavailable) as err:
        await HttpSms(endpoint("sms", "http://127.0.0.1:9/v1"), http_client).send(
            "13800138000", "x", idempotency_key="k")
    assert err.value.error_id == "provider_unavailable"


@pytest.mark.parametrize("answer", [{}, {"session_id": 5, "qr_url": "x"},
                                    {"session_id": "", "qr_url": "x"}])
async def test_an_unusable_answer_is_a_bad_response(fake: tuple[FakeProvider, str],
                                                    http_client: AiohttpClient,
                                                    answer: dict[str, Any]) -> None:
    provider, url = fake
    provider.answer = answer
    with pytest.raises(ProviderBadResponse) as err:
        await HttpFace(endpoint("face", url), http_client).create_session(
            "张三", ID_A, callback_url="https://us.example/cb", idempotency_key="k")
    assert err.value.status == 502


async def test_a_non_json_2xx_answer_is_a_bad_response(fake: tuple[FakeProvider, str],
                                                      http_client: AiohttpClient) -> None:
    provider, url = fake
    provider.raw = b"OK"
    with pytest.raises(ProviderBadResponse):
        await HttpRealName(endpoint("realname", url), http_client).check(
            "张三", ID_A, idempotency_key="k")


async def test_a_client_that_raises_anything_gives_a_provider_error() -> None:
    class Broken:
        async def post_json(self, url: str, body: bytes, headers: Mapping[str, str], *,
                            timeout: float,  # noqa: ASYNC109 - the port's signature
                            ) -> tuple[int, dict[str, Any]]:
            raise RuntimeError("boom")

    with pytest.raises(ProviderUnavailable):
        await HttpSms(endpoint("sms", "http://x"), Broken()).send("1", "x",
                                                                  idempotency_key="k")


def test_the_providers_package_imports_no_web_storage_or_http_library() -> None:
    """flows/ stays free of aiohttp: the HTTP client is injected through a port."""
    import subprocess
    import sys
    code = ("import sys, flows.providers; "
            "bad = [m for m in ('aiohttp', 'storage', 'web', 'redis') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], cwd=CSV_FILE.parents[2],
                            capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
