"""The Content-Security-Policy of the platform's answers (set in web/app.py)."""

from __future__ import annotations

# Responses that are not pages (JSON, problem+json, PNG, metrics) load nothing and are
# framed by no one.
API_CSP = "default-src 'none'; frame-ancestors 'none'"
# A page that sets no policy of its own may use its own origin's scripts, styles and
# images; a page that needs more (the sandbox's inline styles, the service hall's
# system icons) sets its own.
PAGE_CSP = "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
