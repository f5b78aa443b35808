"""An example business system (OpenID Connect relying party) for the platform's hall."""

from examples.business_system.app import Config, create_app

__all__ = ["Config", "create_app"]
