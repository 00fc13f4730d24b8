"""`topo graph`: Mermaid and dot text, and the HTML page rendered by a real browser (headless Chromium)."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import yaml

from cli_runner import run_topo
from topo.graph import build, dot, mermaid
from topo.load import load_topology
from topo.route import Topology

EXAMPLE = Path(__file__).parent.parent / "examples" / "orders"

# A vhost with every kind of edge: bindings, an exchange-to-exchange cycle, an alternate exchange
# (by argument and by policy) and a dead-letter route.
EVERY_EDGE = {
    "version": 1,
    "vhosts": {
        "edges": {
            "exchanges": {
                "in": {"type": "topic", "arguments": {"alternate-exchange": "lost"}},
                "lost": {"type": "fanout"},
                "loop": {"type": "fanout"},
                "side": {"type": "direct"},
                "dlx": {"type": "fanout"},
            },
            "queues": {
                "work": {"arguments": {"x-dead-letter-exchange": "dlx"}},
                "unrouted": {},
                "dead": {},
                'odd <"name"> & #1': {},
            },
            "bindings": [
                {"source": "in", "destination": "work", "routing_key": "a.#"},
                {"source": "in", "destination": "loop", "destination_type": "exchange", "routing_key": "b.*"},
                {"source": "loop", "destination": "in", "destination_type": "exchange"},
                {"source": "loop", "destination": 'odd <"name"> & #1'},
                {"source": "lost", "destination": "unrouted"},
                {"source": "dlx", "destination": "dead"},
            ],
            "policies": {
                "side-ae": {"pattern": "^side$", "apply-to": "exchanges", "definition": {"alternate-exchange": "lost"}}
            },
        }
    },
}


def _every_edge(tmp_path: Path) -> Path:
    path = tmp_path / "edges.yaml"
    path.write_text(yaml.safe_dump(EVERY_EDGE), encoding="utf-8")
    return path


def test_edges_of_every_kind(tmp_path: Path) -> None:
    desired = load_topology([str(_every_edge(tmp_path))]).desired
    nodes, edges = build(Topology.of(desired.objects, "edges"))
    names = {n.id: n.name for n in nodes}
    found = {(names[e.source], names[e.target], e.kind) for e in edges}
    assert ("in", "work", "binding") in found
    assert ("in", "loop", "e2e") in found and ("loop", "in", "e2e") in found
    assert ("in", "lost", "alternate") in found and ("side", "lost", "alternate") in found
    assert ("work", "dlx", "dead-letter") in found
    text = mermaid(Topology.of(desired.objects, "edges"))
    assert "==>" in text and "-.->" in text and "odd #lt;#quot;name#quot;#gt; & #35;1" in text
    assert "style=dashed" in dot(Topology.of(desired.objects, "edges"))


def _png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Rows of RGB(A) pixels of an 8-bit PNG, unfiltered (no imaging library needed)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    height = channels = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and colour in (2, 6)
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * channels
    rows: list[bytes] = []
    previous = bytearray(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            corner = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 255
            elif kind == 2:
                line[i] = (line[i] + up) & 255
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 255
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                line[i] = (line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 255
        rows.append(bytes(line))
        previous = line
    return width, channels, rows


def _count_colour(rows: list[bytes], channels: int, rgb: tuple[int, int, int]) -> int:
    wanted = bytes(rgb)
    return sum(1 for row in rows for i in range(0, len(row), channels) if row[i : i + 3] == wanted)


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "chromium is not installed: run scripts/setup-debian.sh (it installs Debian's chromium package)"
    return found


def _browser(*args: str) -> subprocess.CompletedProcess[str]:
    # No network at all (every host name fails to resolve): the page must not need any.
    command = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)


def test_html_renders_in_chromium(tmp_path: Path) -> None:
    for source, vhost in ((EXAMPLE, "orders"), (_every_edge(tmp_path), "edges")):
        page = tmp_path / f"{vhost}.html"
        result = run_topo("graph", "-f", str(source), "--format", "html", "-o", str(page))
        assert result.code == 0, result.output
        text = page.read_text(encoding="utf-8")
        # Self-contained: no script, nothing fetched (the only URL is the SVG namespace).
        assert "<script" not in text and "src=" not in text and "<link" not in text
        assert re.findall(r"https?://[^\"' ]+", text) == ["http://www.w3.org/2000/svg"]
        desired = load_topology([str(source)]).desired
        topology = Topology.of(desired.objects, vhost)
        names = sorted(name for name in topology.exchanges if not name.startswith("amq.")) + sorted(topology.queues)
        width, height = (int(v) for v in re.search(r'<svg[^>]* width="(\d+)" height="(\d+)"', text).groups())
        shot = tmp_path / f"{vhost}.png"
        size = f"--window-size={width + 80},{height + 160}"
        dom = _browser(f"--screenshot={shot}", size, "--dump-dom", page.as_uri()).stdout
        for name in names:
            escaped = name.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            assert f">{escaped}</text>" in dom, f"{name!r} is not drawn in the rendered page"
        _, channels, rows = _png_pixels(shot.read_bytes())
        # Every node is a filled box of ~220x48 pixels in its kind's colour: they were all painted.
        exchanges = sum(1 for name in names if name in topology.exchanges)
        queues = len(names) - exchanges
        assert _count_colour(rows, channels, (0xEA, 0xF2, 0xFB)) > exchanges * 5000
        assert _count_colour(rows, channels, (0xEA, 0xFA, 0xF1)) > queues * 5000
        assert _count_colour(rows, channels, (0xC0, 0x39, 0x2B)) > 20  # the dead-letter routes
