"""Detection and false-positive rates over the labelled corpus; prints the table it asserts on."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from policies.guardrails import DETECTORS, scan

CORPUS = Path(__file__).with_name("corpus")
SALT = b"corpus-salt"
MIN_DETECTION = 0.95
MAX_FALSE_POSITIVES = 0.01


def _rows() -> list[dict]:
    with open(CORPUS / "labelled.jsonl", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def test_each_detector_finds_at_least_95_percent_of_its_labelled_examples() -> None:
    per_detector: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    per_type: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    missed: list[str] = []
    for row in _rows():
        if not row["expect"]:
            continue
        found = {f.type for f in scan(row["text"], DETECTORS, SALT)}
        ok = set(row["expect"]) <= found
        per_detector[row["detector"]][0] += 1
        per_detector[row["detector"]][1] += ok
        for t in row["expect"]:
            per_type[t][0] += 1
            per_type[t][1] += t in found
        if not ok:
            missed.append(f"{row['expect']} got {sorted(found)}: {row['text'][:80]!r}")
    print("\ndetector            examples  detected  rate")
    for det, (n, k) in sorted(per_detector.items()):
        print(f"{det:<20}{n:>8}{k:>10}  {k / n:6.1%}")
    print("\ntype                          examples  detected")
    for t, (n, k) in sorted(per_type.items()):
        print(f"{t:<30}{n:>8}{k:>10}")
        assert n >= 10, f"corpus has only {n} examples of {t}"
    for det, (n, k) in per_detector.items():
        assert k / n >= MIN_DETECTION, f"{det}: {k}/{n} detected; missed:\n" + "\n".join(missed)
    assert set(per_detector) == set(DETECTORS)


def test_ordinary_code_logs_and_prose_raise_under_1_percent_false_positives() -> None:
    lines = [
        line
        for line in (CORPUS / "ordinary.txt").read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    assert len(lines) >= 200
    flagged = [(line, scan(line, DETECTORS, SALT)) for line in lines]
    flagged = [(line, fs) for line, fs in flagged if fs]
    rate = len(flagged) / len(lines)
    print(
        f"\nordinary text: {len(lines)} lines, {len(flagged)} flagged, {rate:.2%} false positives"
    )
    for line, fs in flagged:
        print(f"  {[f.type for f in fs]} {line[:80]!r}")
    assert rate <= MAX_FALSE_POSITIVES
    # The whole file scanned as one prompt behaves the same as line by line.
    whole = (CORPUS / "ordinary.txt").read_text(encoding="utf-8")
    assert len(scan(whole, DETECTORS, SALT)) <= len(flagged)


def test_near_misses_stay_quiet() -> None:
    near = [row["text"] for row in _rows() if not row["expect"]]
    loud = [(t, [f.type for f in scan(t, DETECTORS, SALT)]) for t in near]
    loud = [(t, types) for t, types in loud if types]
    print(f"\nnear misses: {len(near)}, flagged: {len(loud)}")
    assert not loud, loud
