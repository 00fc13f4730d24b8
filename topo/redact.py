"""Keep secrets out of every line topo prints: known secrets are registered once and scrubbed on output."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote, unquote

_secrets: set[str] = set()
_SCHEME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+.-")
_WHITESPACE = re.compile(r"\s")


def register_secret(value: str | None) -> None:
    # Very short values would scrub innocent text (a password "a" would blank every letter a).
    if value and len(value) >= 3:
        _secrets.add(value)
        _secrets.add(quote(value, safe=""))


def forget_secrets() -> None:
    """For tests: start from an empty registry."""
    _secrets.clear()


def redact_url(text: str) -> str:
    """amqps://user:pass@host/v -> amqps://user:***@host/v (and any user-only form is left as is).

    The userinfo runs to the last @ before whitespace (passwords may hold unencoded @). A scan rather
    than a regex: every message goes through here, and a regex for this grammar backtracks
    quadratically on a long value without "://" or "@" (100,000 characters took 23 s).
    """
    if "://" not in text:
        return text
    out: list[str] = []
    done = 0  # text[:done] is in `out` already
    run_end = run_at = -1  # the whitespace-free run last scanned, and its last @ (-1: none)
    index = text.find("://")
    while index >= 0:
        start = index
        while start > done and text[start - 1] in _SCHEME_CHARS:
            start -= 1
        while start < index and not (text[start].isascii() and text[start].isalpha()):
            start += 1  # a scheme starts with a letter
        userinfo_start = index + 3
        if start < index:
            if userinfo_start > run_end:  # a new run: find its end and last @ once
                space = _WHITESPACE.search(text, userinfo_start)
                run_end = space.start() if space else len(text)
                run_at = text.rfind("@", userinfo_start, run_end)
            if run_at >= userinfo_start:
                user, _, password = text[userinfo_start:run_at].partition(":")
                if password:
                    out.append(text[done:start])
                    out.append(f"{text[start:userinfo_start]}{user}:***@")
                    done = run_at + 1
                    index = text.find("://", done)
                    continue
                out.append(text[done : run_at + 1])  # user-only: kept, and not scanned again
                done = run_at + 1
                index = text.find("://", done)
                continue
        index = text.find("://", index + 1)
    out.append(text[done:])
    return "".join(out)


def register_url_secret(url: str) -> None:
    """Registers the password of a user:password@ in a URL, even a malformed one (it may hold / or @).

    Parts of it too: a broker that cannot parse such a URI echoes the pieces it split it into.
    """
    parts = split_uri(url)
    if parts is None:
        return
    password = parts[2]
    for value in {password, unquote(password)}:
        register_secret(value)
        for piece in re.split(r"[/:@?#]", value):
            if len(piece) >= 4:
                register_secret(piece)


def split_uri(uri: str) -> tuple[str, str, str, str] | None:
    """scheme://user:password@rest -> (scheme://, user, password, @rest), or None without a password.

    The userinfo ends at the last @: RabbitMQ accepts passwords with unencoded @, / or spaces in the URIs
    of shovels and federation upstreams, so the URI grammar cannot be trusted to find it.
    """
    scheme, separator, rest = uri.partition("://")
    if not separator or "@" not in rest:
        return None
    userinfo, _, host = rest.rpartition("@")
    user, colon, password = userinfo.partition(":")
    if not colon or not password:
        return None
    return scheme + separator, user, password, "@" + host


def mask_uris(value: Any) -> Any:
    """A JSON value with the password of every URI string in it replaced by ***."""
    if isinstance(value, str):
        parts = split_uri(value) if "://" in value else None
        return value if parts is None else f"{parts[0]}{parts[1]}:***{parts[3]}"
    if isinstance(value, dict):
        return {key: mask_uris(item) for key, item in value.items()}
    if isinstance(value, list):
        return [mask_uris(item) for item in value]
    return value


def scrub(text: str) -> str:
    text = redact_url(text)
    for secret in sorted(_secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text
