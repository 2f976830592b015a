"""Redaction of secrets (passwords in connection strings, API keys) from any text.

Every log line, exception message, metadata entry and CLI output that may contain a connection string
goes through :func:`redact`. It is deliberately liberal: it masks the password of any URL with userinfo,
``password=...`` key/value pairs (libpq DSN style) and bearer tokens.
"""

from __future__ import annotations

import re

MASK = "***"

# scheme://user:password@host  -> scheme://user:***@host
_URL_USERINFO = re.compile(r"(?P<prefix>[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@\s]*:)(?P<secret>[^@\s]*)(?P<at>@)")
# password=secret / password: secret / PGPASSWORD=secret (libpq keyword DSNs, env dumps)
_KV_PASSWORD = re.compile(
    r"(?i)(?P<prefix>\b(?:pg)?pass(?:word)?\s*[=:]\s*)(?P<quote>['\"]?)(?P<secret>[^\s'\"&;,]+)"
)
# Authorization: Bearer xxx
_BEARER = re.compile(r"(?i)(?P<prefix>bearer\s+)(?P<secret>[A-Za-z0-9._\-~+/=]{4,})")

_extra_secrets: set[str] = set()


def register_secret(secret: str | None) -> None:
    """Remember a literal secret (an API key, a password) so it is masked wherever it appears."""
    if secret and len(secret) >= 4:
        _extra_secrets.add(secret)


def register_url_secret(url: str | None) -> None:
    """Remember a URL that is a secret as a whole (a webhook URL: its token is in the path or the query),
    and its path and query too, so the token is masked even where a client prints the URL re-normalised
    (another scheme/host spelling, a trailing slash) or only its path."""
    if not url:
        return
    from urllib.parse import urlsplit

    register_secret(url)
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    if len(path) >= 16:  # a token-bearing path, not a bare "/hooks"
        register_secret(path)
    if parts.query:
        register_secret(parts.query)


def redact(text: object) -> str:
    """Return ``str(text)`` with every password/API key masked."""
    s = str(text)
    s = _URL_USERINFO.sub(lambda m: f"{m['prefix']}{MASK}{m['at']}", s)
    s = _KV_PASSWORD.sub(lambda m: f"{m['prefix']}{m['quote']}{MASK}", s)
    s = _BEARER.sub(lambda m: f"{m['prefix']}{MASK}", s)
    for secret in _extra_secrets:
        s = s.replace(secret, MASK)
    return s
