"""Fuzzed input never hangs or crashes topo: 2,000 mutated topology and definitions files per run.

The seed differs per run (more ground covered over many CI runs) and is printed with any failure;
TOPO_FUZZ_SEED=N repeats a run, `python tests/fuzz.py --seed N --show I` prints case I.
"""

from __future__ import annotations

import os
import secrets

import fuzz

CASES = int(os.environ.get("TOPO_FUZZ_CASES", "2000"))


def test_fuzzed_input_ends_in_exit_0_or_1_quickly_and_never_in_an_internal_error() -> None:
    seed = int(os.environ.get("TOPO_FUZZ_SEED") or secrets.randbelow(10**6))
    tally, bad = fuzz.run(seed, CASES, report=lambda line: None)
    failures = "\n".join(f"  case {seed}:{o.case.index} ({o.case.kind}): {o.problem}" for o in bad[:20])
    assert not bad, (
        f"{len(bad)} of {CASES} fuzzed cases failed (seed {seed}; see one with "
        f"`python tests/fuzz.py --seed {seed} --show INDEX`):\n{failures}"
    )
    assert tally["cases"] == CASES
    # Not vacuous: both inputs were exercised, and the mutations reached both valid and invalid files.
    assert tally["yaml"] > CASES // 2 and tally["json"] > CASES // 10
    assert tally["exit 0"] > 0 and tally["exit 1"] > CASES // 2
