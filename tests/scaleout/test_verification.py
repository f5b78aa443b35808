"""tests/flows/test_verification.py, re-run over PgBouncer and on the Redis Cluster."""

import pytest

from tests.flows.test_verification import *  # noqa: F403

pytestmark = pytest.mark.scaleout
