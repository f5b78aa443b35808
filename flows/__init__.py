"""The platform's guards, actions, validators, policies and outbox senders.

``register(registry)`` is what ``flowctl`` and the server load by default
(``FLOW_MODULES=flows``).
"""

from engine import Registry
from flows import (
    agents,
    backoffice,
    captcha,
    common,
    face,
    identity,
    legal,
    passwords,
    personal,
    phones,
    policies,
    profile,
    signin,
    sms,
    verification,
)


def register(registry: Registry) -> None:
    for module in (common, identity, passwords, policies, captcha, sms, signin, face,
                   personal, legal, verification, backoffice, profile, phones, agents):
        module.register(registry)


__all__ = ["register"]
