"""flowctl systems and flowctl signing-keys, as an operator runs them."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.pii import Vault
from storage import PgOidc, create_pool
from tests.web.oidc.conftest import SYSTEMS
from tests.web.test_cli import flowctl
from tests.web.test_processes import base_env
from web.oidc.routes import secret_hash


@pytest.fixture(scope="module")
def keys_db(database_url: str) -> Iterator[str]:
    """A database of this module's own: its signing keys are these tests' alone."""
    from storage.scratch import create_database, drop_database

    own = f"{database_url.partition('?')[0].rsplit('/', 1)[1]}_oidc_cli"
    dsn = asyncio.run(create_database(database_url, own))
    yield dsn
    asyncio.run(drop_database(database_url, own))


@pytest.fixture
def env(keys_db: str, tmp_path: Path) -> dict[str, str]:
    systems = tmp_path / "systems.yaml"
    systems.write_text(SYSTEMS, encoding="utf-8")
    return {**base_env(), "DATABASE_URL": keys_db, "SYSTEMS_FILE": str(systems)}


async def _hashes(dsn: str, system: str) -> list[bytes]:
    pool = await create_pool(dsn, min_size=1, max_size=1)
    try:
        return await PgOidc(pool).secret_hashes(system)
    finally:
        await pool.close()


def test_systems_lists_them_and_a_secret_is_printed_once_and_stored_hashed(
        env: dict[str, str], keys_db: str) -> None:
    listed = flowctl(env, "systems")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].endswith("systems.yaml: 4 system(s)")
    assert lines[1].startswith("portal\tGovernment portal\tconfidential\t"
                               "organisation,personal\topenid profile phone id_number\t")
    made = flowctl(env, "systems", "secret", "portal")
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()
    assert len(secret) == 43
    hashes = asyncio.run(_hashes(keys_db, "portal"))
    assert hashes == [secret_hash(Vault.for_development(), secret)]
    assert secret.encode() not in b"".join(hashes)
    again = flowctl(env, "systems", "secret", "portal", "--revoke-others")
    assert "1 older secret(s) revoked" in again.stderr
    assert asyncio.run(_hashes(keys_db, "portal")) == [
        secret_hash(Vault.for_development(), again.stdout.strip())]
    refused = flowctl(env, "systems", "secret", "spa")
    assert refused.returncode == 1
    assert "public client" in refused.stderr


def test_systems_reports_every_problem_of_the_file(env: dict[str, str],
                                                   tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("systems:\n  x1:\n    scopes: [openid]\n", encoding="utf-8")
    done = flowctl({**env, "SYSTEMS_FILE": str(bad)}, "systems")
    assert done.returncode == 1
    assert f"{bad}:2:3: system 'x1' needs 'name'" in done.stderr.splitlines()


def test_signing_keys_new_rotate_and_list(env: dict[str, str]) -> None:
    first = flowctl(env, "signing-keys", "new")
    assert first.returncode == 0, first.stderr
    kid1, state = first.stdout.split()
    assert state == "current"  # the first key signs at once: nothing to overlap with
    assert flowctl(env, "signing-keys", "rotate").returncode == 1
    second = flowctl(env, "signing-keys", "new")
    kid2, state = second.stdout.split()
    assert state == "next"
    assert "rotate to it in 300 s" in second.stderr
    assert flowctl(env, "signing-keys", "new").returncode == 1  # one next at a time
    rotated = flowctl(env, "signing-keys", "rotate")
    assert rotated.stdout.splitlines() == [f"{kid2}\tcurrent", f"{kid1}\tretired"]
    listed = flowctl(env, "signing-keys", "list").stdout.splitlines()
    assert [line.split("\t")[:2] for line in listed] == [[kid1, "retired"],
                                                        [kid2, "current"]]
    assert "published until" in listed[0]
