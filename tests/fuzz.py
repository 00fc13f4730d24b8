"""A mutation fuzzer for topo's input paths: topology YAML (`topo validate`) and definitions JSON
(`topo export --from-definitions`).

Why a mutator over the project's own files rather than hypothesis: what breaks a parser and validator
is input that is *almost* right (a real topology with one alias, one nesting level, one huge number or
one stray character more), which random structure rarely reaches; mutating the examples and test files
gets there at once, needs no new dependency, and each case is reproducible from (seed, index) alone.

Every case must end with exit 0 or 1, within CASE_SECONDS, without an internal error.

By hand (lower priority, in the background):
    nice -n 19 .venv/bin/python tests/fuzz.py --cases 100000 --seed 1 > /tmp/fuzz.log
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CASE_SECONDS = 5.0
GROWN_SIZE = 200_000
# The examples read a few variables; set so that they validate as they are (the mutator unsets them).
ENV = {"CLOUDAMQP_URL": "amqps://u:s3cretpw@h.example/v", "CLOUDAMQP_VHOST": "v", "JOBS_MAX_LENGTH": "10"}


def yaml_seeds() -> list[str]:
    paths = sorted(ROOT.glob("examples/**/*.yaml")) + sorted(ROOT.glob("tests/bad/**/*.yaml"))
    return [path.read_text(encoding="utf-8") for path in paths]


def json_seeds() -> list[str]:
    return [path.read_text(encoding="utf-8") for path in sorted(ROOT.glob("tests/definitions/*.json"))]


# Values that have broken YAML tools: types, sizes, tags, anchors, interpolation, unicode.
ODD_VALUES = [
    "0", "-1", "1e999", "-.inf", ".nan", "0x7fffffffffffffff", "0o777", "1_000", "9" * 5000, "1." + "0" * 400,
    "true", "no", "~", "null", "''", '""', "[]", "{}", "[[[[[[]]]]]]", "2020-13-45", "2001-12-14t21:59:43.10-05:00",
    "!!binary aGVsbG8=", "!!omap [{a: 1}]", "!!set {a, b}", "!!python/object:os.system x", "!unknown x",
    "&a x", "*a", "*undefined", "${X}", "${X:-5}", "${A:-" * 50, "$${X}", "'${X}'", '"\\x00"', '"\\ud800"',
    "é" * 1000, "a" * 100_000, "\U0001f600", "|\n  text", ">-\n  folded", "- a\n- b", "{a: 1, a: 2}",
    "amqp://u:p@h", "amqps://" + "u" * 10_000 + "@h", "a://" * 5000, "@" * 1000, "`", "%YAML 1.1", "? a", "? [a]\n: b",
]  # fmt: skip
ODD_CHARS = list(":-#\"'|>&*!%@`\t\r\x00\ufeff\u2028{}[],? \n\\")


def _alias_bomb(levels: int, width: int) -> str:
    lines = ["x0: &x0 [" + ", ".join(["v"] * width) + "]"]
    lines += [f"x{n}: &x{n} [" + ", ".join([f"*x{n - 1}"] * width) + "]" for n in range(1, levels)]
    return "\n".join(lines)


def _lines(text: str) -> list[str]:
    return text.split("\n")


def _replace_value(rng: random.Random, text: str) -> str:
    lines = _lines(text)
    candidates = [i for i, line in enumerate(lines) if ":" in line]
    if not candidates:
        return text
    i = rng.choice(candidates)
    head = lines[i].split(":", 1)[0]
    lines[i] = f"{head}: {rng.choice(ODD_VALUES)}"
    return "\n".join(lines)


def _replace_key(rng: random.Random, text: str) -> str:
    lines = _lines(text)
    candidates = [i for i, line in enumerate(lines) if ":" in line]
    if not candidates:
        return text
    i = rng.choice(candidates)
    head, _, rest = lines[i].partition(":")
    indent = head[: len(head) - len(head.lstrip())]
    key = rng.choice(["<<", "? x", "*a", "&a k", "1", "true", "null", "'x", "k" * rng.choice([1, 300, 70_000])])
    lines[i] = f"{indent}{key}:{rest}"
    return "\n".join(lines)


def _line_edit(rng: random.Random, text: str) -> str:
    lines = _lines(text)
    if not lines:
        return text
    i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
    choice = rng.randrange(5)
    if choice == 0:
        del lines[i]
    elif choice == 1:
        lines.insert(i, lines[j])
    elif choice == 2:
        lines[i], lines[j] = lines[j], lines[i]
    elif choice == 3:
        lines[i] = " " * rng.choice([1, 2, 4]) + lines[i]
    else:
        lines[i] = lines[i].lstrip()
    return "\n".join(lines)


def _char_edit(rng: random.Random, text: str) -> str:
    if not text:
        return rng.choice(ODD_CHARS)
    at = rng.randrange(len(text))
    choice = rng.randrange(3)
    if choice == 0:
        return text[:at] + rng.choice(ODD_CHARS) + text[at:]
    if choice == 1:
        return text[:at] + text[at + 1 :]
    return text[:at] + rng.choice(ODD_CHARS) + text[at + 1 :]


def _truncate(rng: random.Random, text: str) -> str:
    return text[: rng.randrange(len(text) + 1)]


def _grow(rng: random.Random, text: str) -> str:
    """Repeats a block of lines many times: big inputs, duplicate keys, long lists."""
    lines = _lines(text)
    if len(lines) < 2:
        return text
    i = rng.randrange(len(lines))
    j = min(len(lines), i + rng.randint(1, 8))
    # Up to about 200 KB: large enough to show any worse-than-linear cost, small enough for 5 s per case
    # on a busy 2-core machine (time per byte is measured for larger files in benchmarks/).
    times = min(rng.choice([10, 100, 1000]), max(2, GROWN_SIZE // max(1, sum(map(len, lines[i:j])))))
    block = lines[i:j] * times
    return "\n".join(lines[:i] + block + lines[j:])


def _nest(rng: random.Random, text: str) -> str:
    lines = _lines(text)
    i = rng.randrange(len(lines) + 1)
    depth = rng.choice([10, 70, 200, 1000, 5000])
    opener, closer = rng.choice([("[", "]"), ("{a: ", "}"), ("[{a: ", "}]")])
    unbalanced = rng.random() < 0.2
    value = opener * depth + ("" if unbalanced else closer * depth)
    lines.insert(i, f"k: {value}")
    return "\n".join(lines)


def _block_nest(rng: random.Random, text: str) -> str:
    depth = rng.choice([30, 100, 400])
    block = (
        "".join("  " * n + "a:\n" for n in range(depth))
        if rng.random() < 0.5
        else "".join("  " * n + "-\n" for n in range(depth))
    )
    return text + "\n" + block


def _aliases(rng: random.Random, text: str) -> str:
    lines = _lines(text)
    i = rng.randrange(len(lines) + 1)
    choice = rng.randrange(4)
    if choice == 0:
        lines.insert(i, _alias_bomb(rng.randint(2, 9), rng.randint(2, 10)))
    elif choice == 1:  # an anchor on one value, aliases to it elsewhere
        lines = [line.replace(": {}", ": &a {}", 1) if n == i else line for n, line in enumerate(lines)]
        lines.insert(rng.randrange(len(lines) + 1), "  x: *a")
    elif choice == 2:
        chain = "\n".join(f"m{n}: &m{n} {{<<: [*m{n - 1}, *m{n - 1}]}}" for n in range(1, 40))
        lines.insert(i, "m0: &m0 {k: 1}\n" + chain)
    else:
        lines.insert(i, "r: &r [*r]")
    return "\n".join(lines)


def _splice(rng: random.Random, text: str, seeds: list[str]) -> str:
    other = _lines(rng.choice(seeds))
    lines = _lines(text)
    start = rng.randrange(len(other))
    chunk = other[start : start + rng.randint(1, 20)]
    at = rng.randrange(len(lines) + 1)
    return "\n".join(lines[:at] + chunk + lines[at:])


YAML_MUTATORS: list[Callable[[random.Random, str], str]] = [
    _replace_value, _replace_value, _replace_key, _line_edit, _line_edit, _char_edit, _char_edit, _truncate,
    _grow, _nest, _block_nest, _aliases,
]  # fmt: skip


def _odd_json(rng: random.Random) -> Any:
    choice = rng.randrange(12)
    if choice == 0:
        return int("9" * rng.choice([20, 400]))  # 5,000 digits: see _json_text (Python will not write them)
    if choice == 1:
        return rng.choice([1e308, -0.0, 0.5, -1, 0, 2**63, 2**64])
    if choice == 2:
        return "x" * rng.choice([0, 1, 256, 100_000])
    if choice == 3:
        return rng.choice([True, False, None])
    if choice == 4:
        value: Any = []
        for _ in range(rng.choice([5, 70, 500])):
            value = [value]
        return value
    if choice == 5:
        return {"name": rng.choice(["", "amq.x", "a/b", "é", "x" * 300]), "vhost": rng.choice(["/", "", None, 1])}
    if choice == 6:
        return [rng.choice([1, "a", None, {}, []]) for _ in range(rng.randint(0, 5))]
    if choice == 7:
        return {"x-queue-type": rng.choice(["quorum", "stream", "classic", "bogus", 1])}
    if choice == 8:
        return "amqp://user:" + "p" * rng.randint(0, 50) + "@host"
    if choice == 9:
        return {}
    if choice == 10:
        return rng.choice(["", "administrator", "a,b", ",", "management,policymaker"])
    return float("nan") if rng.random() < 0.5 else float("inf")


def _json_paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _json_paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _json_paths(item, (*path, index))


def _json_structural(rng: random.Random, text: str) -> str:
    try:
        data = json.loads(text)
        paths = list(_json_paths(data))
    except (ValueError, RecursionError):  # already mutated beyond JSON, or nested too deep to walk
        return text
    path = rng.choice(paths)
    if not path:
        return json.dumps(_odd_json(rng))
    parent = data
    for element in path[:-1]:
        parent = parent[element]
    action = rng.randrange(4)
    if action == 0 or not isinstance(parent, (dict, list)):
        parent[path[-1]] = _odd_json(rng)
    elif action == 1:
        del parent[path[-1]]
    elif action == 2 and isinstance(parent, list):
        parent.extend([parent[path[-1]]] * rng.choice([1, 10, 500]))
    elif isinstance(parent, dict):
        parent[rng.choice(["_x", "arguments", "durable", "vhost", "tags", "type", "name", "x" * 1000])] = _odd_json(rng)
    try:
        mutated = json.dumps(data, indent=rng.choice([None, 2]), allow_nan=True)
    except (ValueError, RecursionError):
        return text
    # Copies of copies grow without bound (368 MB once): stay at the size the YAML cases grow to.
    return mutated if len(mutated) <= GROWN_SIZE else text


def _json_text(rng: random.Random, text: str) -> str:
    choice = rng.randrange(5)
    if choice == 0:
        return _char_edit(rng, text)
    if choice == 1:
        return _truncate(rng, text)
    if choice == 2:
        at = rng.randrange(len(text) + 1)
        odd = ["[" * 100_000, '{"a":' * 5000, "1" * 10_000, '"\\ud800"', "NaN", "-"]
        return text[:at] + rng.choice(odd) + text[at:]
    if choice == 3:
        if rng.random() < 0.5:
            return text.replace(": false", ": " + "9" * 5000, 1).replace(": true", ": 1e99999", 1)
        return text.replace(":", ": " + "[" * rng.choice([60, 100]), 1)
    return _line_edit(rng, text)


JSON_MUTATORS: list[Callable[[random.Random, str], str]] = [_json_structural, _json_structural, _json_text]


@dataclass(frozen=True)
class Case:
    index: int
    kind: str  # "yaml" or "json"
    text: str


def cases(seed: int, count: int) -> Iterator[Case]:
    """Case i of a seed is the same on every run (its own generator), so any failure is reproducible."""
    ys, js = yaml_seeds(), json_seeds()
    for index in range(count):
        rng = random.Random(f"{seed}:{index}")
        if rng.random() < 0.75:
            text = rng.choice(ys)
            for _ in range(rng.randint(1, 4)):
                mutate = rng.choice(YAML_MUTATORS)
                text = mutate(rng, text) if rng.random() > 0.1 else _splice(rng, text, ys)
            yield Case(index, "yaml", text)
        else:
            text = rng.choice(js)
            for _ in range(rng.randint(1, 3)):
                text = rng.choice(JSON_MUTATORS)(rng, text)
            yield Case(index, "json", text)


class CaseTimeout(BaseException):
    """Not an Exception: topo's own handlers must not catch it."""


@dataclass
class Outcome:
    case: Case
    code: int
    seconds: float
    stderr: str

    @property
    def problem(self) -> str | None:
        if self.code == -1:
            return f"did not finish within {CASE_SECONDS} s"
        if self.code not in (0, 1):
            return f"exit {self.code}"
        if "Internal error" in self.stderr or "Traceback" in self.stderr:
            return "internal error: " + self.stderr.strip().splitlines()[-1][:300]
        if self.seconds > CASE_SECONDS:
            return f"took {self.seconds:.1f} s"
        return None


def run_case(case: Case, directory: Path) -> Outcome:
    from cli_runner import run_topo  # in-process: thousands of cases, no interpreter start each

    path = directory / ("case.yaml" if case.kind == "yaml" else "case.json")
    path.write_text(case.text, encoding="utf-8", errors="surrogatepass")
    args = ("validate", "-f", str(path)) if case.kind == "yaml" else ("export", "--from-definitions", str(path))

    def expire(signum: int, frame: Any) -> None:
        raise CaseTimeout

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, CASE_SECONDS * 2)
    started = time.monotonic()
    try:
        result = run_topo(*args, env={**ENV, "NO_COLOR": "1", "TOPO_URL": None})
        code, stderr = result.code, result.stderr
    except CaseTimeout:
        code, stderr = -1, ""
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    return Outcome(case, code, time.monotonic() - started, stderr)


def run(seed: int, count: int, report: Callable[[str], None] = print) -> tuple[dict[str, int], list[Outcome]]:
    tally = {"cases": 0, "exit 0": 0, "exit 1": 0, "yaml": 0, "json": 0}
    bad: list[Outcome] = []
    slowest = 0.0
    with tempfile.TemporaryDirectory(prefix="topo-fuzz-") as scratch:
        for case in cases(seed, count):
            outcome = run_case(case, Path(scratch))
            tally["cases"] += 1
            tally[case.kind] += 1
            if outcome.code in (0, 1):
                tally[f"exit {outcome.code}"] += 1
            slowest = max(slowest, outcome.seconds)
            if outcome.problem:
                bad.append(outcome)
                report(f"case {seed}:{case.index} ({case.kind}): {outcome.problem}")
            if tally["cases"] % 100 == 0:
                gc.collect()  # topo's main() turns the collector off, for a short-lived process
            if tally["cases"] % 1000 == 0:
                report(f"{tally['cases']} cases, {len(bad)} bad, slowest {slowest:.2f} s")
    tally["slowest ms"] = int(slowest * 1000)
    return tally, bad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--show", type=int, help="print case INDEX of the seed and exit")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    if args.show is not None:
        for case in cases(args.seed, args.show + 1):
            if case.index == args.show:
                sys.stdout.write(case.text)
        return
    started = time.monotonic()
    tally, bad = run(args.seed, args.cases, lambda line: print(line, flush=True))
    print(json.dumps({**tally, "bad": len(bad), "seconds": round(time.monotonic() - started)}), flush=True)
    raise SystemExit(1 if bad else 0)


if __name__ == "__main__":
    main()
