"""flowctl systems and flowctl signing-keys: the provider's configuration and keys."""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
from datetime import UTC, datetime

from engine import DuplicateKey
from storage import PgOidc, create_pool
from web.oidc.provider import TOKEN_LIFETIME
from web.oidc.routes import secret_hash
from web.oidc.signing import JWKS_MAX_AGE, add_new_key
from web.oidc.systems import Systems, check_systems_text
from web.platform import make_vault
from web.settings import Settings


def _systems(settings: Settings) -> Systems | None:
    """The systems file, linted: every problem printed, None if there is one."""
    path = settings.systems_path
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        return Systems({}, source=path)
    except (OSError, UnicodeDecodeError) as exc:
        print(f"{path}:1:1: cannot read: {exc}", file=sys.stderr)
        return None
    found, diags = check_systems_text(text, path)
    for d in diags:
        print(d, file=sys.stderr)
    if diags:
        print(f"{len(diags)} problem(s)", file=sys.stderr)
        return None
    return Systems(found, source=path)


async def _with_store(dsn: str, work: object) -> object:
    pool = await create_pool(dsn, min_size=1, max_size=2)
    try:
        return await work(PgOidc(pool))  # type: ignore[operator]
    finally:
        await pool.close()


def cmd_systems(args: argparse.Namespace, settings: Settings, dsn_of: object) -> int:
    """List the systems (with how many secrets each has); make a new secret."""
    systems = _systems(settings)
    if systems is None:
        return 1
    with dsn_of(settings) as dsn:  # type: ignore[operator]
        if args.systems_command == "secret":
            return _new_secret(args, settings, systems, dsn)
        summary = asyncio.run(_with_store(dsn, lambda store: store.secrets_summary()))
    assert isinstance(summary, dict)
    print(f"{systems.source}: {len(systems)} system(s)")
    for system in systems:
        count, newest = summary.get(system.id, (0, None))
        secrets_text = ("no secret: flowctl systems secret " + system.id
                        if system.confidential and not count else
                        f"{count} secret(s), newest {newest:%Y-%m-%d}" if count else "public")
        print(f"{system.id}\t{system.name.get('en', '')}\t{system.client_type}"
              f"\t{','.join(sorted(system.account_kinds))}\t{' '.join(system.scopes)}"
              f"\t{secrets_text}")
    return 0


def _new_secret(args: argparse.Namespace, settings: Settings, systems: Systems,
                dsn: str) -> int:
    system = systems.get(args.system)
    if system is None:
        print(f"no system {args.system!r} in {systems.source}", file=sys.stderr)
        return 1
    if not system.confidential:
        print(f"{system.id} is a public client: it authenticates with PKCE alone and has "
              "no secret", file=sys.stderr)
        return 1
    secret = secrets.token_urlsafe(32)
    hashed = secret_hash(make_vault(settings), secret)
    revoked = asyncio.run(_with_store(dsn, lambda store: store.add_secret(
        system.id, hashed, datetime.now(UTC), revoke_others=args.revoke_others)))
    # The only time the secret is shown: only its keyed hash is kept.
    print(secret)
    print(f"the secret of {system.id}, shown once; "
          + (f"{revoked} older secret(s) revoked" if args.revoke_others
             else "older secrets stay valid until --revoke-others"), file=sys.stderr)
    return 0


def cmd_signing_keys(args: argparse.Namespace, settings: Settings, dsn_of: object) -> int:
    """list, new (published before it signs), rotate (the next key signs)."""
    now = datetime.now(UTC)
    with dsn_of(settings) as dsn:  # type: ignore[operator]
        if args.keys_command == "new":
            vault = make_vault(settings)
            try:
                result = asyncio.run(_with_store(
                    dsn, lambda store: add_new_key(store, vault, now)))
            except DuplicateKey:
                print("a next key is already published and waiting: rotate to it first "
                      "(flowctl signing-keys rotate)", file=sys.stderr)
                return 1
            assert isinstance(result, tuple)
            kid, state = result
            print(f"{kid}\t{state}")
            if state == "next":
                print(f"published now; rotate to it in {int(JWKS_MAX_AGE.total_seconds())} s"
                      " or later, once relying parties have fetched the new key set",
                      file=sys.stderr)
            return 0
        if args.keys_command == "rotate":
            # The key that stops signing stays published while what it signed can live,
            # and as long again as relying parties may cache the key set.
            rotated = asyncio.run(_with_store(dsn, lambda store: store.rotate(
                now, TOKEN_LIFETIME + JWKS_MAX_AGE)))
            if rotated is None:
                print("no next key to rotate to: flowctl signing-keys new first",
                      file=sys.stderr)
                return 1
            assert isinstance(rotated, tuple)
            print(f"{rotated[0]}\tcurrent")
            if rotated[1]:
                print(f"{rotated[1]}\tretired")
            return 0
        gone = asyncio.run(_with_store(dsn, lambda store: store.prune_keys(now)))
        rows = asyncio.run(_with_store(dsn, lambda store: store.all_keys()))
    assert isinstance(gone, list)
    assert isinstance(rows, list)
    for kid in gone:
        print(f"{kid}\tgone", file=sys.stderr)
    for row in rows:
        until = f"\tpublished until {row.published_until:%Y-%m-%d %H:%M}" \
            if row.published_until else ""
        print(f"{row.kid}\t{row.state}\t{row.alg}\tcreated {row.created_at:%Y-%m-%d %H:%M}"
              f"{until}")
    return 0
