"""Personal data at rest: seal ID and phone numbers, find them again through a keyed index.

A value is *sealed* with AES-256-GCM under the current encryption key, with a fresh
random 96-bit nonce, and bound to its *purpose* (the column it belongs to, such as
``resident_id``) through the associated data, so a ciphertext moved to another column
no longer opens. Lookups never decrypt: an account is found by the *index* of a value,
HMAC-SHA256 under a separate key, over the normalised value with the purpose as a
domain separator.

A sealed value is ``FORMAT (1 byte) | key id (4 bytes) | nonce (12) | ciphertext+tag``.
The key id is derived from the key itself (not from its place in the configuration),
so after a rotation the old key, listed among ``previous_enc_keys``, still opens what
it sealed, while everything new is sealed with the current key. ``needs_reseal`` tells
a re-encryption job which values are still under an old key.

The index key cannot be rotated this way: a new index key means recomputing every
stored index (decrypt, then ``index`` again) before the old key is dropped.

Nothing here ever puts a plaintext value or a key into an exception message or a repr.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import unicodedata
from collections.abc import Mapping, Sequence

import attrs
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "MOBILE",
    "RESIDENT_ID",
    "Vault",
    "VaultConfigError",
    "VaultError",
    "VaultOpenError",
    "generate_keys",
    "is_development_key",
    "normalise",
]

# The purposes this platform seals; any other lower-case identifier works too.
RESIDENT_ID = "resident_id"
MOBILE = "mobile"

KEY_BYTES = 32
_FORMAT = b"\x01"
_KEY_ID_BYTES = 4
_NONCE_BYTES = 12
_HEADER_BYTES = len(_FORMAT) + _KEY_ID_BYTES
_TAG_BYTES = 16
_PURPOSE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_WHITESPACE = re.compile(r"\s+")

# Development keys are derived from these public labels: anyone can recompute them.
_DEV_ENC_LABEL = b"identity-flows DEVELOPMENT ONLY pii encryption key - never use in production"
_DEV_INDEX_LABEL = b"identity-flows DEVELOPMENT ONLY pii index key - never use in production"


class VaultError(Exception):
    """Root of what the vault raises on purpose."""


class VaultConfigError(VaultError, ValueError):
    """A key is missing, not base64, of the wrong length, or reused: fix the configuration."""


class VaultOpenError(VaultError, ValueError):
    """A sealed value does not open: wrong purpose, unknown key, or altered or cut bytes."""


@attrs.frozen(repr=False, eq=False)
class _Key:
    key_id: bytes
    aead: AESGCM

    def __repr__(self) -> str:
        return f"<key {self.key_id.hex()}>"


def _key_id(key: bytes) -> bytes:
    # A one-way tag of the key: stable across rotations, reveals nothing about the key.
    return hmac.new(key, b"identity-flows pii key id", hashlib.sha256).digest()[:_KEY_ID_BYTES]


_DEV_KEYS = (hashlib.sha256(_DEV_ENC_LABEL).digest(), hashlib.sha256(_DEV_INDEX_LABEL).digest())


def _is_dev(raw: bytes) -> bool:
    return any(hmac.compare_digest(raw, dev) for dev in _DEV_KEYS)


def is_development_key(key_b64: str) -> bool:
    """Tell whether a configured key is one of the public development keys.

    Raise VaultConfigError if it is not a key at all (not base64 of 32 bytes).
    """
    return _is_dev(_decode_key(key_b64, "the key"))


def _decode_key(b64: object, name: str) -> bytes:
    if not isinstance(b64, str) or not b64.strip():
        raise VaultConfigError(f"{name} is missing or not a string: configure a base64-encoded "
                               f"{KEY_BYTES}-byte key (generate one with generate_keys())")
    text = "".join(b64.split()).replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise VaultConfigError(f"{name} is not valid base64") from None
    if len(raw) != KEY_BYTES:
        raise VaultConfigError(f"{name} must decode to {KEY_BYTES} bytes, not {len(raw)}")
    return raw


def _purpose(purpose: object) -> bytes:
    if not isinstance(purpose, str) or not _PURPOSE.match(purpose):
        raise ValueError("a purpose is a lower-case identifier such as 'resident_id'")
    return purpose.encode("ascii")


def _utf8(value: object) -> bytes:
    if not isinstance(value, str):
        raise TypeError(f"a sealed or indexed value must be str, not {type(value).__name__}")
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:
        # The codec's own message quotes the offending character: not that.
        raise ValueError("the value is not valid text (it contains a lone surrogate)") from None


def normalise(value: str) -> str:
    """Return the form a value is indexed under: NFKC, no whitespace, upper-case.

    NFKC turns full-width digits and letters (common with Chinese input methods) into
    ASCII; upper-casing makes an ID number's check character ``x`` equal ``X``.
    """
    return _WHITESPACE.sub("", unicodedata.normalize("NFKC", value)).upper()


@attrs.frozen(repr=False, eq=False)
class Vault:
    """Seal, open and index personal data with configured keys.

    Build it with ``from_config`` (production) or ``for_development``.
    """

    _current: _Key
    _keys: Mapping[bytes, _Key]
    _index_key: bytes
    is_development: bool = False

    @classmethod
    def from_config(cls, enc_key_b64: str, index_key_b64: str, *,
                    previous_enc_keys: Sequence[str] = ()) -> Vault:
        """Build a vault from base64 keys (standard or URL-safe, padding optional).

        ``previous_enc_keys`` are earlier encryption keys, kept only to open older values.
        """
        current = _decode_key(enc_key_b64, "enc_key_b64")
        index_key = _decode_key(index_key_b64, "index_key_b64")
        if isinstance(previous_enc_keys, str):
            raise VaultConfigError("previous_enc_keys must be a list of keys, not one string")
        previous = [_decode_key(k, f"previous_enc_keys[{i}]")
                    for i, k in enumerate(previous_enc_keys)]
        return cls._build(current, index_key, previous, development=False)

    @classmethod
    def for_development(cls) -> Vault:
        """Build a vault with fixed, publicly known keys, for ``make run`` and tests only.

        Anyone can recompute these keys from this source file, so data sealed with them
        is as good as plain text. Production must configure real keys (``from_config``
        with keys from ``generate_keys``); ``is_development`` lets the caller refuse it.
        """
        enc, index = _DEV_KEYS
        return cls._build(enc, index, [], development=True)

    @classmethod
    def _build(cls, current: bytes, index_key: bytes, previous: list[bytes], *,
               development: bool) -> Vault:
        # Development keys given explicitly are development keys all the same.
        development = development or any(_is_dev(k) for k in (current, index_key, *previous))
        if hmac.compare_digest(current, index_key):
            raise VaultConfigError("the encryption key and the index key must be different")
        keys: dict[bytes, _Key] = {}
        for n, raw in enumerate([current, *previous]):
            name = "enc_key_b64" if n == 0 else f"previous_enc_keys[{n - 1}]"
            if hmac.compare_digest(raw, index_key):
                raise VaultConfigError(f"{name} is the index key: the two must differ")
            key = _Key(_key_id(raw), AESGCM(raw))
            if key.key_id in keys:
                raise VaultConfigError(f"{name} repeats an encryption key listed before it")
            keys[key.key_id] = key
        first = next(iter(keys.values()))
        return cls(first, keys, index_key, development)

    @property
    def key_id(self) -> str:
        """The current encryption key's id (hex): which key new values are sealed with."""
        return self._current.key_id.hex()

    def seal(self, purpose: str, value: str) -> bytes:
        """Encrypt ``value`` for the column ``purpose``; a new nonce every call."""
        aad_purpose = _purpose(purpose)
        plain = _utf8(value)
        header = _FORMAT + self._current.key_id
        nonce = os.urandom(_NONCE_BYTES)
        return header + nonce + self._current.aead.encrypt(nonce, plain, header + aad_purpose)

    def open(self, purpose: str, blob: bytes) -> str:
        """Decrypt a value sealed for ``purpose``, with whichever configured key sealed it."""
        aad_purpose = _purpose(purpose)
        if not isinstance(blob, bytes | bytearray | memoryview):
            raise TypeError(f"a sealed value is bytes, not {type(blob).__name__}")
        data = bytes(blob)
        if len(data) < _HEADER_BYTES + _NONCE_BYTES + _TAG_BYTES or data[:1] != _FORMAT:
            raise VaultOpenError(f"not a sealed value (purpose {purpose!r}): "
                                 "unknown format or too short")
        header, nonce = data[:_HEADER_BYTES], data[_HEADER_BYTES:_HEADER_BYTES + _NONCE_BYTES]
        key = self._keys.get(header[1:])
        if key is None:
            raise VaultOpenError(f"sealed with key {header[1:].hex()}, which is not configured "
                                 "(add it to previous_enc_keys)")
        try:
            plain = key.aead.decrypt(nonce, data[_HEADER_BYTES + _NONCE_BYTES:],
                                     header + aad_purpose)
        except InvalidTag:
            raise VaultOpenError(f"the sealed value does not open as {purpose!r}: sealed for "
                                 "another purpose, or altered") from None
        return plain.decode("utf-8")

    def needs_reseal(self, blob: bytes) -> bool:
        """Tell whether a sealed value is under an older key (reseal: ``seal(open())``)."""
        return bytes(blob[1:_HEADER_BYTES]) != self._current.key_id

    def index(self, purpose: str, value: str) -> bytes:
        """Return the 32-byte lookup index of ``value`` (normalised) for ``purpose``.

        Deterministic for one index key, different for each purpose. Stored as BYTEA
        next to the sealed value, under a unique index per purpose.
        """
        domain = _purpose(purpose)
        _utf8(value)  # type and lone-surrogate checks before normalising
        message = domain + b"\x00" + normalise(value).encode("utf-8")
        return hmac.new(self._index_key, message, hashlib.sha256).digest()

    def __repr__(self) -> str:
        kind = "DEVELOPMENT keys, " if self.is_development else ""
        older = ", ".join(k.key_id.hex() for k in self._keys.values() if k is not self._current)
        return f"<Vault {kind}key {self.key_id}, older keys [{older}], index key hidden>"


def generate_keys() -> dict[str, str]:
    """Return a fresh encryption key and index key, base64, named as ``from_config`` takes them.

    For an operator command: ``Vault.from_config(**generate_keys())`` works as is.
    """
    return {
        "enc_key_b64": base64.b64encode(AESGCM.generate_key(bit_length=256)).decode("ascii"),
        "index_key_b64": base64.b64encode(os.urandom(KEY_BYTES)).decode("ascii"),
    }
