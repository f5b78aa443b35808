"""tests/flows/test_personal.py, re-run over PgBouncer and on the Redis Cluster."""

import pytest

from tests.flows.test_personal import *  # noqa: F403

pytestmark = pytest.mark.scaleout
