"""Management API paths. Apart from topo.client so that the object kinds, which name their paths, can be
imported by `topo validate` without requests (about 0.1 s of start-up)."""

from __future__ import annotations

from urllib.parse import quote


def api_path(*segments: str) -> str:
    """/api/queues/%2F/a%20b: every segment quoted, so `/`, `%`, `#`, spaces and unicode survive."""
    return "/api/" + "/".join(quote(segment, safe="") for segment in segments)
