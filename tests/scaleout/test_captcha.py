"""Image captchas on the Redis Cluster: tests/flows/test_captcha.py, re-run (conftest.py here)."""

import pytest

from tests.flows.test_captcha import *  # noqa: F403

pytestmark = pytest.mark.scaleout
