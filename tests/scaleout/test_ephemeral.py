"""The Ephemeral port on the Redis Cluster: tests/storage/test_ephemeral.py, re-run."""

import pytest

from tests.storage.test_ephemeral import *  # noqa: F403

pytestmark = pytest.mark.scaleout
