"""Keep secrets out of every line topo prints: known secrets are registered once and scrubbed on output."""

from __future__ import annotations

import re
from urllib.parse import quote, unquote

_secrets: set[str] = set()
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^\s@]*(?:@[^\s@]*)*)@")


def register_secret(value: str | None) -> None:
    # Very short values would scrub innocent text (a password "a" would blank every letter a).
    if value and len(value) >= 3:
        _secrets.add(value)
        _secrets.add(quote(value, safe=""))


def forget_secrets() -> None:
    """For tests: start from an empty registry."""
    _secrets.clear()


def redact_url(url: str) -> str:
    """amqps://user:pass@host/v -> amqps://user:***@host/v (and any user-only form is left as is)."""

    def hide(match: re.Match[str]) -> str:
        user, _, password = match.group("userinfo").partition(":")
        return f"{match.group('scheme')}{user}:***@" if password else match.group(0)

    return _URL_CREDENTIALS.sub(hide, url)


def register_url_secret(url: str) -> None:
    """Registers the password of a user:password@ in a URL, even a malformed one (it may hold / or @)."""
    rest = url.split("://", 1)[-1]
    if "@" in rest:
        password = rest.rsplit("@", 1)[0].partition(":")[2]
        register_secret(password)
        register_secret(unquote(password))


def scrub(text: str) -> str:
    text = redact_url(text)
    for secret in sorted(_secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text
