"""Summarise py-spy ``--format raw`` output (collapsed stacks) by function.

``python -m bench.profile_summary FILE [--top N] [--match TEXT]`` prints, for the samples
in FILE, the functions with the most *inclusive* samples (on the stack at all) and the
most *self* samples (at the top of the stack), as shares of all samples. Frames look
like ``name (path/file.py:line)``; lines are dropped so a function counts once.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

_LINE = re.compile(r":\d+\)$")


def _function(frame: str) -> str:
    return _LINE.sub(")", frame.strip())


def summarise(text: str) -> tuple[int, Counter[str], Counter[str]]:
    total = 0
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_function(f) for f in stack.split(";")]
        total += count
        for name in set(frames):
            inclusive[name] += count
        own[frames[-1]] += count
    return total, inclusive, own


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile_summary", description=__doc__)
    p.add_argument("file")
    p.add_argument("--top", type=int, default=40)
    p.add_argument("--match", help="only functions whose frame contains this text")
    a = p.parse_args(argv)
    total, inclusive, own = summarise(Path(a.file).read_text(encoding="utf-8"))
    if not total:
        print("no samples", file=sys.stderr)
        return 1
    print(f"{total} samples")
    for title, table in (("inclusive", inclusive), ("self", own)):
        print(f"\n-- {title}")
        shown = 0
        for name, n in table.most_common():
            if a.match and a.match not in name:
                continue
            print(f"{100 * n / total:6.1f}%  {name}")
            shown += 1
            if shown >= a.top:
                break
    return 0


if __name__ == "__main__":
    sys.exit(main())
