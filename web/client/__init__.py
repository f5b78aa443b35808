"""The platform's reference web client: server-rendered pages from the UI descriptions."""

from web.client.views import setup_client

__all__ = ["setup_client"]
