"""Steps, timers (two competing workers) and the outbox over PgBouncer:
tests/engine/test_runtime.py, re-run (conftest.py here)."""

import pytest

from tests.engine.test_runtime import *  # noqa: F403

pytestmark = pytest.mark.scaleout
