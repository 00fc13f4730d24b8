"""api_path: every path segment is quoted, so names with `/`, `%`, `#`, spaces or unicode reach the right URL."""

from __future__ import annotations

import pytest

from topo.apipath import api_path


@pytest.mark.parametrize(
    ("segments", "expected"),
    [
        (("overview",), "/api/overview"),
        (("queues", "/", "orders"), "/api/queues/%2F/orders"),
        (("queues", "/", "a b"), "/api/queues/%2F/a%20b"),
        (("queues", "prod/eu", "orders/created"), "/api/queues/prod%2Feu/orders%2Fcreated"),
        (("queues", "/", "100%"), "/api/queues/%2F/100%25"),
        (("queues", "/", "%2F"), "/api/queues/%2F/%252F"),  # a literal "%2F" in a name is not a slash
        (("exchanges", "/", "orders#1"), "/api/exchanges/%2F/orders%231"),
        (("exchanges", "/", "what?x=1&y"), "/api/exchanges/%2F/what%3Fx%3D1%26y"),
        (("queues", "/", "café"), "/api/queues/%2F/caf%C3%A9"),
        (("queues", "/", "注文"), "/api/queues/%2F/%E6%B3%A8%E6%96%87"),
        (("queues", "/", "🐇"), "/api/queues/%2F/%F0%9F%90%87"),
        (("queues", "/", "a+b"), "/api/queues/%2F/a%2Bb"),
        (("queues", "/", "orders.created-v2_x~"), "/api/queues/%2F/orders.created-v2_x~"),
        (("bindings", "/", "e", "amq.direct", "q", "q1"), "/api/bindings/%2F/e/amq.direct/q/q1"),
        (("definitions", "/"), "/api/definitions/%2F"),
    ],
)
def test_api_path(segments: tuple[str, ...], expected: str) -> None:
    assert api_path(*segments) == expected


def test_empty_segment_is_kept() -> None:
    # The default exchange is named "": its segment must not vanish (or the URL would name another resource).
    assert api_path("exchanges", "/", "") == "/api/exchanges/%2F/"
    assert api_path("exchanges", "/", "", "bindings", "source") == "/api/exchanges/%2F//bindings/source"
