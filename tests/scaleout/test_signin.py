"""Sign-in limits (every spelling, parallel guesses) over PgBouncer and on the Redis
Cluster: tests/flows/test_signin.py, re-run (conftest.py here)."""

import pytest

from tests.flows.test_signin import *  # noqa: F403

pytestmark = pytest.mark.scaleout
