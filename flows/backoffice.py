"""Placeholder: filled in by the backoffice procedures."""

from __future__ import annotations

from engine import Registry


def register(registry: Registry) -> None:
    """Register this module's actions and guards."""
