"""The example business system (examples/business_system) beside a development server.

``flowctl serve`` in development with EXAMPLE_SYSTEM on (``make run`` sets it) starts it as a
process of its own on the host and port of the ``example`` system's URLs in
systems.yaml, so that a newcomer sees single sign-on work from the hall. Its client
secret is made on the first start, kept in ``DATA_DIR/example_system.secret`` (mode
0600) and registered like any other (only its keyed hash in PostgreSQL); it is never
printed or logged, and reaches the example as a file name.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

import structlog

from flows.pii import Vault
from storage import PgOidc
from web.oidc.routes import secret_hash
from web.oidc.systems import Systems

log = structlog.get_logger("web.oidc")

SYSTEM_ID = "example"
SECRET_FILE = "example_system.secret"  # noqa: S105 - a file name, not the secret
# Where the example's code is in a checkout; an installed wheel has none.
EXAMPLE_PACKAGE = Path(__file__).resolve().parents[2] / "examples" / "business_system"


async def ensure_secret(store: PgOidc, vault: Vault, data_dir: str, now: datetime) -> Path:
    """The example's secret file: made (with its hash stored) on the first start; its
    hash stored again if the database is new but the file is not."""
    path = Path(data_dir) / SECRET_FILE
    if path.exists():
        secret = path.read_text(encoding="utf-8").strip()
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        secret = secrets.token_urlsafe(32)
        # Created readable by its owner alone, before anything is written to it.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(secret + "\n")
        log.info("example_system_secret_created", file=str(path))
    digest = secret_hash(vault, secret)
    if digest not in await store.secret_hashes(SYSTEM_ID):
        await store.add_secret(SYSTEM_ID, digest, now, revoke_others=False)
    return path


def start(systems: Systems, *, issuer: str, secret_file: Path) -> subprocess.Popen[bytes] | None:
    """Start the example on the address its systems.yaml entry names; None if there is
    no such entry or no example code."""
    system = systems.get(SYSTEM_ID)
    if system is None:
        log.info("example_system_not_configured", hint="no 'example' in systems.yaml")
        return None
    if not (EXAMPLE_PACKAGE / "__main__.py").exists():
        log.info("example_system_not_found", path=str(EXAMPLE_PACKAGE))
        return None
    where = urlsplit(system.initiate_login_uri)
    host, port = where.hostname or "127.0.0.1", where.port or 80
    cmd = [sys.executable, "-m", "examples.business_system", "--issuer", issuer,
           "--host", host, "--port", str(port), "--client-id", SYSTEM_ID,
           "--secret-file", str(secret_file)]
    # Our own interpreter and module, arguments we built: no shell, no input.
    child = subprocess.Popen(cmd, cwd=EXAMPLE_PACKAGE.parents[1])  # noqa: S603
    log.info("example_system_started", url=f"http://{host}:{port}/", pid=child.pid)
    return child


def stop(child: subprocess.Popen[bytes] | None) -> None:
    if child is None or child.poll() is not None:
        return
    child.terminate()
    try:
        child.wait(timeout=5)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
