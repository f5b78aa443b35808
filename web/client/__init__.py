"""The platform's reference web client: server-rendered pages from the UI descriptions."""

# The sign-in for business systems, the back office and the search without scripts add
# their pages to the client's.
from web.client import console, search, signin  # noqa: F401
from web.client.views import setup_client

__all__ = ["setup_client"]
