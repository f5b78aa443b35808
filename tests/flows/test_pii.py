"""The vault: sealed values open only as what they were sealed for, keys rotate, the
index finds a value without decrypting, and nothing secret shows in a message or repr."""

from __future__ import annotations

import base64
import os
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flows.pii import (
    _DEV_KEYS,
    MOBILE,
    RESIDENT_ID,
    Vault,
    VaultConfigError,
    VaultOpenError,
    generate_keys,
    is_development_key,
)

ID_NUMBER = "45010219900307123X"
PHONE = "13800138000"


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@pytest.fixture
def keys() -> dict[str, str]:
    return generate_keys()


@pytest.fixture
def vault(keys: dict[str, str]) -> Vault:
    return Vault.from_config(**keys)


VAULT = Vault.from_config(**generate_keys())

purposes = st.from_regex(r"\A[a-z][a-z0-9_]{0,20}\Z")


# -- seal and open -------------------------------------------------------------------

@given(purpose=purposes, value=st.text())
def test_open_returns_what_was_sealed(purpose: str, value: str) -> None:
    assert VAULT.open(purpose, VAULT.seal(purpose, value)) == value


def test_sealing_twice_gives_different_ciphertexts(vault: Vault) -> None:
    a, b = vault.seal(RESIDENT_ID, ID_NUMBER), vault.seal(RESIDENT_ID, ID_NUMBER)
    assert a != b
    assert ID_NUMBER.encode() not in a


def test_sealed_value_does_not_open_for_another_purpose(vault: Vault) -> None:
    blob = vault.seal(RESIDENT_ID, ID_NUMBER)
    with pytest.raises(VaultOpenError, match="mobile") as info:
        vault.open(MOBILE, blob)
    assert ID_NUMBER not in str(info.value)
    assert ID_NUMBER not in repr(info.value)
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


@given(data=st.data())
def test_any_altered_byte_is_refused(data: st.DataObject) -> None:
    blob = bytearray(VAULT.seal(RESIDENT_ID, ID_NUMBER))
    at = data.draw(st.integers(0, len(blob) - 1))
    flip = data.draw(st.integers(1, 255))
    blob[at] ^= flip
    with pytest.raises(VaultOpenError) as info:
        VAULT.open(RESIDENT_ID, bytes(blob))
    assert ID_NUMBER not in str(info.value)


@pytest.mark.parametrize("cut", [0, 1, 5, 17, 32])
def test_truncated_value_is_refused(vault: Vault, cut: int) -> None:
    blob = vault.seal(MOBILE, PHONE)
    with pytest.raises(VaultOpenError):
        vault.open(MOBILE, blob[:cut])


def test_value_sealed_under_an_unknown_key_names_the_key_id_not_the_value(
        vault: Vault) -> None:
    other = Vault.from_config(**generate_keys())
    blob = other.seal(MOBILE, PHONE)
    with pytest.raises(VaultOpenError, match=other.key_id) as info:
        vault.open(MOBILE, blob)
    assert PHONE not in str(info.value)


@pytest.mark.parametrize("purpose", ["", "Resident", "resident id", "a\x00b", "1abc", None])
def test_bad_purpose_is_refused(vault: Vault, purpose: Any) -> None:
    with pytest.raises(ValueError, match="purpose"):
        vault.seal(purpose, PHONE)
    with pytest.raises(ValueError, match="purpose"):
        vault.index(purpose, PHONE)


def test_lone_surrogate_is_refused_without_quoting_it(vault: Vault) -> None:
    with pytest.raises(ValueError, match="surrogate") as info:
        vault.seal(MOBILE, "138\ud800")
    assert "\ud800" not in str(info.value)
    assert "\\ud800" not in str(info.value)


def test_non_text_values_are_refused(vault: Vault) -> None:
    with pytest.raises(TypeError):
        vault.seal(MOBILE, 13800138000)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        vault.open(MOBILE, "not bytes")  # type: ignore[arg-type]


# -- rotation ------------------------------------------------------------------------

def test_value_sealed_with_the_old_key_opens_after_rotation(keys: dict[str, str]) -> None:
    before = Vault.from_config(**keys)
    old_blob = before.seal(RESIDENT_ID, ID_NUMBER)

    new_key = generate_keys()["enc_key_b64"]
    after = Vault.from_config(new_key, keys["index_key_b64"],
                              previous_enc_keys=[keys["enc_key_b64"]])

    assert after.open(RESIDENT_ID, old_blob) == ID_NUMBER
    assert after.needs_reseal(old_blob)
    new_blob = after.seal(RESIDENT_ID, ID_NUMBER)
    assert not after.needs_reseal(new_blob)
    assert after.key_id != before.key_id
    # New values are sealed with the new key only: the old configuration cannot open them.
    with pytest.raises(VaultOpenError):
        before.open(RESIDENT_ID, new_blob)
    # The index key did not change, so lookups still find the value.
    assert after.index(RESIDENT_ID, ID_NUMBER) == before.index(RESIDENT_ID, ID_NUMBER)


def test_key_id_depends_on_the_key_not_its_place_in_the_configuration(
        keys: dict[str, str]) -> None:
    k2 = generate_keys()["enc_key_b64"]
    a = Vault.from_config(keys["enc_key_b64"], keys["index_key_b64"], previous_enc_keys=[k2])
    b = Vault.from_config(k2, keys["index_key_b64"], previous_enc_keys=[keys["enc_key_b64"]])
    blob = a.seal(MOBILE, PHONE)
    assert b.open(MOBILE, blob) == PHONE
    assert b.needs_reseal(blob)


# -- index ---------------------------------------------------------------------------

@given(purpose=purposes, value=st.text())
def test_index_is_deterministic(purpose: str, value: str) -> None:
    assert VAULT.index(purpose, value) == VAULT.index(purpose, value)
    assert len(VAULT.index(purpose, value)) == 32


def test_index_separates_purposes(vault: Vault) -> None:
    assert vault.index(RESIDENT_ID, "13800138000") != vault.index(MOBILE, "13800138000")


def test_index_depends_on_the_index_key(keys: dict[str, str]) -> None:
    a = Vault.from_config(**keys)
    b = Vault.from_config(keys["enc_key_b64"], generate_keys()["index_key_b64"])
    assert a.index(MOBILE, PHONE) != b.index(MOBILE, PHONE)


@pytest.mark.parametrize("variant", [
    "45010219900307123x",
    " 450102 19900307 123X ",
    "４５０１０２１９９００３０７１２３Ｘ",  # full width, as some input methods type it
])
def test_index_normalises_case_spaces_and_width(vault: Vault, variant: str) -> None:
    assert vault.index(RESIDENT_ID, variant) == vault.index(RESIDENT_ID, ID_NUMBER)


def test_index_tells_different_values_apart(vault: Vault) -> None:
    assert vault.index(MOBILE, "13800138000") != vault.index(MOBILE, "13800138001")


# -- keys and configuration -----------------------------------------------------------

def test_reprs_hide_keys_and_values(keys: dict[str, str]) -> None:
    old = generate_keys()["enc_key_b64"]
    vault = Vault.from_config(**keys, previous_enc_keys=[old])
    text = repr(vault) + str(vault)
    for secret in (keys["enc_key_b64"], keys["index_key_b64"], old):
        assert secret not in text
        raw = base64.b64decode(secret)
        assert raw.hex() not in text
        assert repr(raw) not in text
    assert vault.key_id in text


@pytest.mark.parametrize(("enc", "index", "message"), [
    ("", b64(os.urandom(32)), "enc_key_b64 is missing"),
    (None, b64(os.urandom(32)), "enc_key_b64 is missing"),
    (b64(os.urandom(32)), "  ", "index_key_b64 is missing"),
    ("not base64 at all!", b64(os.urandom(32)), "enc_key_b64 is not valid base64"),
    (b64(os.urandom(16)), b64(os.urandom(32)), "enc_key_b64 must decode to 32 bytes, not 16"),
    (b64(os.urandom(32)), b64(os.urandom(33)), "index_key_b64 must decode to 32 bytes"),
], ids=["enc-empty", "enc-none", "index-blank", "enc-not-base64", "enc-16-bytes",
        "index-33-bytes"])
def test_bad_keys_are_refused_at_construction(enc: Any, index: Any, message: str) -> None:
    with pytest.raises(VaultConfigError, match=message) as info:
        Vault.from_config(enc, index)
    for given_key in (enc, index):
        if given_key and given_key.strip():
            assert given_key not in str(info.value)


def test_bad_previous_key_is_named_by_position(keys: dict[str, str]) -> None:
    with pytest.raises(VaultConfigError, match=r"previous_enc_keys\[1\] must decode to 32"):
        Vault.from_config(**keys, previous_enc_keys=[generate_keys()["enc_key_b64"],
                                                     b64(os.urandom(24))])
    with pytest.raises(VaultConfigError, match="list of keys"):
        Vault.from_config(**keys, previous_enc_keys=keys["enc_key_b64"])


def test_encryption_and_index_keys_must_differ() -> None:
    key = generate_keys()["enc_key_b64"]
    with pytest.raises(VaultConfigError, match="must be different"):
        Vault.from_config(key, key)
    other = generate_keys()
    with pytest.raises(VaultConfigError, match="is the index key"):
        Vault.from_config(other["enc_key_b64"], key, previous_enc_keys=[key])


def test_repeated_encryption_key_is_refused(keys: dict[str, str]) -> None:
    with pytest.raises(VaultConfigError, match="repeats"):
        Vault.from_config(**keys, previous_enc_keys=[keys["enc_key_b64"]])


def test_url_safe_and_unpadded_base64_are_accepted() -> None:
    raw = bytes(range(250, 256)) + os.urandom(26)
    url_safe = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    vault = Vault.from_config(url_safe, generate_keys()["index_key_b64"])
    standard = Vault.from_config(b64(raw), generate_keys()["index_key_b64"])
    assert vault.key_id == standard.key_id


def test_generated_keys_are_fresh_and_valid() -> None:
    a, b = generate_keys(), generate_keys()
    assert set(a) == {"enc_key_b64", "index_key_b64"}
    assert len({*a.values(), *b.values()}) == 4
    assert all(len(base64.b64decode(v)) == 32 for v in a.values())


def test_development_vault_is_fixed_and_says_so() -> None:
    a, b = Vault.for_development(), Vault.for_development()
    assert a.is_development
    assert not Vault.from_config(**generate_keys()).is_development
    assert "DEVELOPMENT" in repr(a)
    assert a.key_id == b.key_id
    assert b.open(MOBILE, a.seal(MOBILE, PHONE)) == PHONE
    assert a.index(MOBILE, PHONE) == b.index(MOBILE, PHONE)


def test_development_keys_given_as_configuration_are_still_development_keys() -> None:
    dev_enc, dev_index = (base64.b64encode(k).decode() for k in _DEV_KEYS)
    own = generate_keys()
    assert is_development_key(dev_enc)
    assert is_development_key(dev_index)
    assert not is_development_key(own["enc_key_b64"])
    with pytest.raises(VaultConfigError):
        is_development_key("not a key")
    assert Vault.from_config(dev_enc, dev_index).is_development
    assert Vault.from_config(own["enc_key_b64"], dev_index).is_development
    assert Vault.from_config(**own, previous_enc_keys=[dev_enc]).is_development
    assert not Vault.from_config(**own).is_development
