"""A platform with business systems of the tests' own, and a relying party's tools."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from engine import FrozenClock
from tests.conftest import serve_platform
from tests.platform import Platform
from web import keys
from web.oidc import OIDC
from web.oidc.routes import secret_hash

SYSTEMS = """
systems:
  portal:
    name: {zh: 政务门户, en: Government portal}
    icon: https://portal.example/icon.svg
    initiate_login_uri: https://portal.example/login
    redirect_uris: [http://127.0.0.1:8091/callback, https://portal.example/callback]
    account_kinds: [personal, organisation]
    scopes: [openid, profile, phone, id_number]
  permits:
    name: {zh: 审批系统, en: Permits}
    initiate_login_uri: https://permits.example/start
    redirect_uris: [https://permits.example/cb]
    account_kinds: [personal, organisation, supervisor]
    scopes: [openid, profile]
    subject_type: pairwise
  orgs-only:
    name: {zh: 企业服务, en: Business services}
    initiate_login_uri: https://orgs.example/login
    redirect_uris: [https://orgs.example/cb]
    account_kinds: [organisation]
    scopes: [openid, profile]
  spa:
    name: {zh: 移动应用, en: Mobile app}
    initiate_login_uri: https://app.example/login
    redirect_uris: [https://app.example/cb]
    account_kinds: [personal]
    scopes: [openid, profile]
    client_type: public
"""


@contextlib.asynccontextmanager
async def with_systems(text: str, database_url: str, redis_prefix: str, clock: FrozenClock,
                       tmp_path: Path) -> AsyncIterator[Platform]:
    """The platform on the real flows.yaml with the systems ``text`` configures."""
    path = tmp_path / "systems.yaml"
    path.write_text(text, encoding="utf-8")
    async with serve_platform(database_url, redis_prefix, clock,
                              systems_file=str(path)) as served:
        yield served


@pytest.fixture
async def oidc(database_url: str, redis_prefix: str, clock: FrozenClock,
               tmp_path: Path) -> AsyncIterator[Platform]:
    """The platform on the real flows.yaml with the systems above."""
    async with with_systems(SYSTEMS, database_url, redis_prefix, clock, tmp_path) as served:
        yield served


async def new_secret(p: Platform, system_id: str) -> str:
    """A client secret for a system, stored as `flowctl systems secret` stores one."""
    secret = secrets.token_urlsafe(32)
    provider = p.app[OIDC]
    await provider.store.add_secret(system_id, secret_hash(p.app[keys.SERVICES].vault, secret),
                                    p.app[keys.CLOCK].now(), revoke_others=False)
    return secret


def base_url(p: Platform) -> str:
    return str(p.client.make_url("")).rstrip("/")


def location(response: Any) -> str:
    return str(response.headers.get("Location", ""))
