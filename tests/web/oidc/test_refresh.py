"""Refresh tokens, for the systems configured to get them: rotated at every use, a
reused one revokes its whole family, none outlives the session it came from."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from engine import FrozenClock
from tests.platform import Platform
from tests.web.oidc.conftest import new_secret, with_systems
from tests.web.oidc.test_provider import RelyingParty, code_for, signed_in_person
from web import keys

SYSTEMS = """
systems:
  records:
    name: {zh: 档案系统, en: Records}
    initiate_login_uri: https://records.example/login
    redirect_uris: [https://records.example/cb]
    account_kinds: [personal]
    scopes: [openid, profile]
    refresh_tokens: true
  mobile:
    name: {zh: 移动应用, en: Mobile app}
    initiate_login_uri: https://app.example/login
    redirect_uris: [https://app.example/cb]
    account_kinds: [personal]
    scopes: [openid, profile]
    client_type: public
    refresh_tokens: true
  plain:
    name: {zh: 普通系统, en: Plain}
    initiate_login_uri: https://plain.example/login
    redirect_uris: [https://plain.example/cb]
    account_kinds: [personal]
    scopes: [openid, profile]
"""


@pytest.fixture
async def oidc(database_url: str, redis_prefix: str, clock: FrozenClock,
               tmp_path: Path) -> AsyncIterator[Platform]:
    async with with_systems(SYSTEMS, database_url, redis_prefix, clock, tmp_path) as served:
        yield served


async def party(p: Platform, system: str = "records") -> RelyingParty:
    secret = None if system == "mobile" else await new_secret(p, system)
    host = {"records": "records.example", "mobile": "app.example", "plain": "plain.example"}
    return RelyingParty(p, system, secret, redirect_uri=f"https://{host[system]}/cb")


async def refresh(rp: RelyingParty, refresh_token: str, **extra: Any) -> dict[str, Any]:
    token = await rp.client.refresh_token(f"{rp.base}/token", refresh_token=refresh_token,
                                          **extra)
    return dict(token)


async def alive(rp: RelyingParty, token: dict[str, Any]) -> bool:
    return (await rp.userinfo(token)).status_code == 200


@pytest.mark.parametrize("system", ["records", "mobile"])
async def test_a_refresh_token_gives_a_new_pair_and_is_rotated(oidc: Platform,
                                                             system: str) -> None:
    account = await signed_in_person(oidc)
    rp = await party(oidc, system)
    try:
        first = await rp.fetch_token(await code_for(oidc, rp))
        assert first["refresh_token"]
        oidc.app[keys.CLOCK].advance(timedelta(minutes=11))  # the access token expired
        assert not await alive(rp, first)
        second = await refresh(rp, first["refresh_token"])
        assert second["refresh_token"] != first["refresh_token"]
        assert second["access_token"] != first["access_token"]
        assert second["expires_in"] == 600
        info = (await rp.userinfo(second)).json()
        assert info["sub"] == account["id"]
        third = await refresh(rp, second["refresh_token"])
        assert await alive(rp, third)
    finally:
        await rp.aclose()


async def test_a_reused_refresh_token_revokes_its_whole_family(oidc: Platform) -> None:
    await signed_in_person(oidc)
    rp = await party(oidc)
    other = await party(oidc)
    try:
        first = await rp.fetch_token(await code_for(oidc, rp))
        unrelated = await other.fetch_token(await code_for(oidc, other))
        second = await refresh(rp, first["refresh_token"])
        assert await alive(rp, second)
        # The first refresh token again: a thief's copy, or the one a thief used.
        with pytest.raises(Exception, match="invalid_grant"):
            await refresh(rp, first["refresh_token"])
        assert not await alive(rp, second)
        with pytest.raises(Exception, match="invalid_grant"):
            await refresh(rp, second["refresh_token"])
        # Another family, from another code, lives on.
        assert await alive(other, unrelated)
        assert await refresh(other, unrelated["refresh_token"])
    finally:
        await rp.aclose()
        await other.aclose()


async def test_refresh_tokens_die_with_the_session(oidc: Platform) -> None:
    await signed_in_person(oidc)
    rp = await party(oidc)
    try:
        token = await rp.fetch_token(await code_for(oidc, rp))
        assert (await oidc.client.post("/api/session/logout")).status == 200
        with pytest.raises(Exception, match="invalid_grant"):
            await refresh(rp, token["refresh_token"])
    finally:
        await rp.aclose()


async def test_a_refresh_token_lives_no_longer_than_its_session(oidc: Platform) -> None:
    await signed_in_person(oidc)
    rp = await party(oidc)
    try:
        token = await rp.fetch_token(await code_for(oidc, rp))
        hours = oidc.app[keys.SETTINGS].session_hours
        oidc.app[keys.CLOCK].advance(timedelta(hours=hours, seconds=1))
        with pytest.raises(Exception, match="invalid_grant"):
            await refresh(rp, token["refresh_token"])
    finally:
        await rp.aclose()


async def test_another_system_cannot_use_the_refresh_token_nor_revoke_it(
        oidc: Platform) -> None:
    await signed_in_person(oidc)
    rp = await party(oidc)
    thief = await party(oidc, "mobile")
    try:
        token = await rp.fetch_token(await code_for(oidc, rp))
        with pytest.raises(Exception, match="invalid_grant"):
            await refresh(thief, token["refresh_token"])
        assert await alive(rp, await refresh(rp, token["refresh_token"]))
    finally:
        await rp.aclose()
        await thief.aclose()


async def test_a_refresh_may_narrow_the_scope_but_not_widen_it(oidc: Platform) -> None:
    await signed_in_person(oidc)
    rp = await party(oidc)
    try:
        token = await rp.fetch_token(await code_for(oidc, rp))
        with pytest.raises(Exception, match="invalid_scope"):
            await refresh(rp, token["refresh_token"], scope="openid profile phone")
        narrow = await refresh(rp, token["refresh_token"], scope="openid")
        assert narrow["scope"] == "openid"
        assert "name" not in (await rp.userinfo(narrow)).json()
    finally:
        await rp.aclose()


async def test_a_system_not_configured_for_them_gets_no_refresh_token(
        oidc: Platform) -> None:
    await signed_in_person(oidc)
    rp = await party(oidc, "plain")
    try:
        token = await rp.fetch_token(await code_for(oidc, rp))
        assert "refresh_token" not in token
        with pytest.raises(Exception, match="unauthorized_client"):
            await refresh(rp, token["access_token"])
    finally:
        await rp.aclose()
