"""The platform's guards, actions, validators, policies and outbox senders.

``register(registry)`` is what ``flowctl`` and the server load by default
(``FLOW_MODULES=flows``).
"""

from engine import Registry
from flows import (
    agents,
    backoffice,
    captcha,
    center,
    certification,
    common,
    face,
    identity,
    legal,
    passwords,
    personal,
    phones,
    policies,
    profile,
    seals,
    signin,
    sms,
    verification,
)


def register(registry: Registry) -> None:
    for module in (common, center, identity, passwords, policies, captcha, sms, signin, face,
                   personal, legal, verification, backoffice, profile, phones,
                   certification, seals, agents):
        module.register(registry)


__all__ = ["register"]
