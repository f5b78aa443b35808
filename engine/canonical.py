"""Canonical JSON and hashing: the one byte representation hashes are taken over."""

from __future__ import annotations

import hashlib
import json
from typing import Any

GENESIS = "0" * 64


# One encoder for the process (json.dumps with options builds one per call).
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                              allow_nan=False)


def canonical_json(value: Any) -> str:
    """Serialise with sorted keys, no insignificant whitespace, UTF-8 kept as is."""
    return _CANONICAL.encode(value)


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def instance_ref(instance_id: str) -> str:
    """How logs name a flow instance: not its id, which (with the owner's cookie) opens
    it; an operator who has the id finds its lines with ``flowctl ref ID``."""
    return sha256_hex("instance:" + instance_id)[:16]


def content_hash(value: Any) -> str:
    return sha256_hex(canonical_json(value))


def chain_hash(prev_hash: str, body: Any) -> str:
    """Hash one history event: sha256 over the previous hash and the event's canonical JSON."""
    return sha256_hex(prev_hash + canonical_json(body))
