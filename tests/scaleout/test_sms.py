"""SMS codes on the Redis Cluster: tests/flows/test_sms.py, re-run (conftest.py here)."""

import pytest

from tests.flows.test_sms import *  # noqa: F403

pytestmark = pytest.mark.scaleout
