"""Signing keys: published before they sign, published after, then gone."""

from __future__ import annotations

from datetime import timedelta

from joserfc import jwt
from joserfc.jwk import KeySet

from tests.platform import Platform
from tests.web.oidc.test_provider import RelyingParty, code_for, signed_in_person
from web import keys
from web.oidc import OIDC
from web.oidc.provider import TOKEN_LIFETIME
from web.oidc.signing import JWKS_MAX_AGE, PURPOSE, add_new_key


async def published(p: Platform) -> list[str]:
    await p.app[OIDC].keyring.current(p.app[keys.CLOCK].now(), fresh=True)
    body = await (await p.client.get("/.well-known/jwks.json")).json()
    return [k["kid"] for k in body["keys"]]


async def test_a_new_key_is_published_before_it_signs_and_after_it_stops(
        oidc: Platform) -> None:
    provider, clock = oidc.app[OIDC], oidc.app[keys.CLOCK]
    vault = oidc.app[keys.SERVICES].vault
    await signed_in_person(oidc)
    first = (await provider.keyring.current(clock.now(), fresh=True)).signing_kid
    assert first is not None
    rp = RelyingParty(oidc, "spa", None, redirect_uri="https://app.example/cb")
    try:
        # A next key: in the key set at once, signing nothing yet.
        kid, state = await add_new_key(provider.store, vault, clock.now())
        assert state == "next"
        assert kid in await published(oidc)
        before = await rp.fetch_token(await code_for(oidc, rp))
        assert jwt.decode(before["id_token"], await rp.jwks()).header["kid"] == first
        # Rotate: the next key signs; the old one stays published for what it signed.
        assert await provider.store.rotate(clock.now(), TOKEN_LIFETIME + JWKS_MAX_AGE) == (
            kid, first)
        assert await published(oidc) == [kid, first]
        after = await rp.fetch_token(await code_for(oidc, rp))
        assert jwt.decode(after["id_token"], await rp.jwks()).header["kid"] == kid
        assert (await rp.id_token_claims(before))["sub"]  # still verifies
        # Once its tokens cannot be alive any more, it is no longer published, then gone.
        clock.advance(TOKEN_LIFETIME + JWKS_MAX_AGE + timedelta(seconds=1))
        assert await published(oidc) == [kid]
        assert await provider.store.prune_keys(clock.now()) == [first]
        rows = await provider.store.all_keys()
        assert [(r.kid, r.state) for r in rows] == [(kid, "current")]
        assert rows[0].private_sealed is not None
        # The private part is sealed: it opens only with the vault, for this purpose.
        assert b'"d"' not in rows[0].private_sealed
        assert KeySet.import_key_set({"keys": [rows[0].public_jwk]}).keys[0].kid == kid
        assert '"d"' in vault.open(PURPOSE, rows[0].private_sealed)
    finally:
        await rp.aclose()


async def test_rotating_without_a_next_key_changes_nothing(oidc: Platform) -> None:
    provider, clock = oidc.app[OIDC], oidc.app[keys.CLOCK]
    before = [(r.kid, r.state) for r in await provider.store.all_keys()]
    assert await provider.store.rotate(clock.now(), TOKEN_LIFETIME) is None
    assert [(r.kid, r.state) for r in await provider.store.all_keys()] == before


async def test_a_key_sealed_under_another_vault_key_signs_nothing(oidc: Platform) -> None:
    from flows.pii import Vault, generate_keys
    from web.oidc.signing import Keyring

    generated = generate_keys()
    other = Vault.from_config(generated["enc_key_b64"], generated["index_key_b64"])
    provider = oidc.app[OIDC]
    snapshot = await Keyring(provider.store, other).current(oidc.app[keys.CLOCK].now())
    assert snapshot.signing_key is None
    assert snapshot.published  # still published: relying parties verify what it signed
