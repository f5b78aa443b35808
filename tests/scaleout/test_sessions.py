"""Sessions on the Redis Cluster: tests/flows/test_sessions.py, re-run (conftest.py here)."""

import pytest

from tests.flows.test_sessions import *  # noqa: F403

pytestmark = pytest.mark.scaleout
