"""Serve the example business system: ``python -m examples.business_system``.

``flowctl serve`` starts it this way in development (EXAMPLE_SYSTEM); the client secret
is read from a file (``--secret-file``), never from the command line or the logs.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

from aiohttp import web

from examples.business_system.app import Config, create_app


def main() -> None:
    # Authlib 1.9 announces a move of its httpx integration; the client works as is.
    warnings.filterwarnings("ignore", message="The httpx module is deprecated")
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--issuer", default="http://127.0.0.1:8080",
                        help="the platform's URL (its issuer)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--client-id", default="example")
    parser.add_argument("--secret-file", required=True, type=Path,
                        help="a file holding the client secret (flowctl systems secret)")
    args = parser.parse_args()
    secret = args.secret_file.read_text(encoding="utf-8").strip()
    config = Config(issuer=args.issuer.rstrip("/"), base_url=f"http://{args.host}:{args.port}",
                    client_id=args.client_id, client_secret=secret)
    web.run_app(create_app(config), host=args.host, port=args.port, access_log=None,
                print=None)


if __name__ == "__main__":
    main()
