"""Fixtures for tests that read a whole database: one of the test's own."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import structlog

from storage import PgStore, create_pool
from storage.scratch import create_database, drop_database
from tests.conftest import ADMIN_URL


@pytest.fixture
async def own_db() -> AsyncIterator[str]:
    """A database of this test's own: audits and checks read every instance in it."""
    name = f"flows_test_{os.getpid()}_own_{uuid.uuid4().hex[:6]}"
    dsn = await create_database(ADMIN_URL, name)
    yield dsn
    await drop_database(ADMIN_URL, name)


@pytest.fixture
async def store(own_db: str) -> AsyncIterator[PgStore]:
    pool = await create_pool(own_db, min_size=1, max_size=4)
    yield PgStore(pool)
    await pool.close()


@pytest.fixture
def keep_logging() -> Iterator[None]:
    """flowctl configures structlog on capsys' streams: put the suite's configuration back."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)
