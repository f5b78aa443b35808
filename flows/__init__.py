"""The platform's guards, actions, validators and outbox senders.

``register(registry)`` is what ``flowctl`` and the server load by default
(``FLOW_MODULES=flows``).
"""

from engine import Registry
from flows import common


def register(registry: Registry) -> None:
    common.register(registry)


__all__ = ["register"]
