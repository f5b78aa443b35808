"""The bank-branch directory from a CSV file, searched in memory.

The shipped ``flows/data/branches.csv`` is synthetic sandbox data. A real directory in
the same shape (``code,name,bank,city``, lines starting with ``#`` are comments) can be
given with ``BRANCHES_FILE``. A file is read once per process and kept.

Search splits the text into terms (spaces, commas, 、) and keeps the branches that
contain every term, after normalising both sides (full-width to ASCII, case, spaces and
punctuation dropped). Bank nicknames count too: "工行 海淀" finds 中国工商银行…海淀支行.
When nothing contains the terms as typed, a term may also match as characters in order
("工行海淀" in 中国工商银行北京海淀支行), ranked below real substring matches.
"""

from __future__ import annotations

import csv
import functools
import heapq
import re
import unicodedata
from pathlib import Path

import attrs

from flows.providers.ports import Branch

DEFAULT_FILE = Path(__file__).resolve().parent.parent / "data" / "branches.csv"

_CODE = re.compile(r"^[0-9]{12}$")
_SEPARATORS = re.compile(r"[\s,，、;；/|]+")
_MAX_QUERY = 100
_MAX_TERMS = 8
_MAX_LIMIT = 100

# Names people use for the banks; searched as if they were part of every branch's name.
_NICKNAMES = {
    "中国工商银行": "工行 工商银行 icbc",
    "中国农业银行": "农行 农业银行 abc",
    "中国银行": "中行 boc",
    "中国建设银行": "建行 建设银行 ccb",
    "交通银行": "交行 bocom",
    "中国邮政储蓄银行": "邮储 邮政 邮储银行 psbc",
    "招商银行": "招行 cmb",
    "中信银行": "citic",
    "上海浦东发展银行": "浦发 浦发银行 spdb",
    "中国民生银行": "民生 民生银行 cmbc",
    "兴业银行": "兴业 cib",
    "平安银行": "平安 pab",
    "中国光大银行": "光大 光大银行 ceb",
    "华夏银行": "华夏 hxb",
    "广发银行": "广发 cgb",
}


def normalise(text: str) -> str:
    """Fold width and case, drop spaces and punctuation: what search compares."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return "".join(ch for ch in folded
                   if not ch.isspace() and unicodedata.category(ch)[0] not in "PSZC")


def terms(text: str) -> list[str]:
    """Split a query into normalised terms, at most a few of them."""
    parts = (normalise(p) for p in _SEPARATORS.split(text[:_MAX_QUERY]))
    return [p for p in parts if p][:_MAX_TERMS]


@attrs.frozen
class _Entry:
    branch: Branch
    name: str  # normalised
    nicknames: frozenset[str]  # normalised
    haystack: str  # name, nicknames and code, "|"-separated: a quick first filter


def _in_order(term: str, text: str) -> int | None:
    """Return how far apart term's characters lie in text, in order; None if not there."""
    start = text.find(term[0])
    if start < 0:
        return None
    pos = start
    for ch in term[1:]:
        pos = text.find(ch, pos + 1)
        if pos < 0:
            return None
    return pos - start + 1 - len(term)


class CsvBranchDirectory:
    """The BranchDirectory port over a CSV file held in memory."""

    def __init__(self, branches: list[Branch]) -> None:
        self._by_code: dict[str, Branch] = {}
        self._entries: list[_Entry] = []
        # Which entries hold a character: a query scans only those holding all of its own.
        self._by_char: dict[str, set[int]] = {}
        for b in branches:
            if b.code in self._by_code:
                raise ValueError(f"branch code {b.code} appears twice")
            self._by_code[b.code] = b
            nicks = frozenset(normalise(n) for n in _NICKNAMES.get(b.bank, "").split())
            name = normalise(b.name)
            haystack = "|".join([name, *sorted(nicks), b.code])
            for ch in set(haystack):
                self._by_char.setdefault(ch, set()).add(len(self._entries))
            self._entries.append(_Entry(b, name, nicks, haystack))

    @classmethod
    def load(cls, path: str | Path | None = None) -> CsvBranchDirectory:
        """Return the directory of this file (the shipped one by default), read once."""
        return _load(str(Path(path) if path else DEFAULT_FILE))

    def __len__(self) -> int:
        return len(self._entries)

    def codes(self) -> list[str]:
        return list(self._by_code)

    async def get(self, code: str) -> Branch | None:
        return self._by_code.get(code.strip())

    async def search(self, text: str, limit: int = 20) -> list[Branch]:
        return self.find(text, limit)

    def find(self, text: str, limit: int = 20) -> list[Branch]:
        """Search synchronously; ``search`` is the port's async face of it."""
        wanted = terms(text)
        limit = max(1, min(limit, _MAX_LIMIT))
        if not wanted:
            return []
        chars = sorted(set("".join(wanted)), key=lambda ch: len(self._by_char.get(ch, ())))
        candidates = set(self._by_char.get(chars[0], ()))
        for ch in chars[1:]:
            candidates &= self._by_char.get(ch, set())
        entries = [self._entries[i] for i in candidates]
        scored: list[tuple[int, int, str, Branch]] = []
        for entry in entries:
            if not all(t in entry.haystack for t in wanted):
                continue
            score = self._score(entry, wanted)
            if score is not None:
                scored.append((-score, len(entry.name), entry.branch.code, entry.branch))
        if not scored:
            for entry in entries:
                score = self._loose_score(entry, wanted)
                if score is not None:
                    scored.append((-score, len(entry.name), entry.branch.code, entry.branch))
        best = heapq.nsmallest(limit, scored, key=lambda s: s[:3])
        return [s[3] for s in best]

    @staticmethod
    def _score(entry: _Entry, wanted: list[str]) -> int | None:
        total = 0
        for term in wanted:
            if term.isdigit() and entry.branch.code.startswith(term):
                total += 30
            elif (at := entry.name.find(term)) >= 0:
                # A term that starts a word of the name (bank, city) ranks a bit higher.
                total += 10 + (3 if at == 0 else 0) + min(len(term), 6)
            elif term in entry.nicknames:
                total += 9
            elif any(term in n for n in entry.nicknames):
                total += 6
            else:
                return None
        return total

    @staticmethod
    def _loose_score(entry: _Entry, wanted: list[str]) -> int | None:
        total = 0
        for term in wanted:
            if term in entry.name:
                total += 10
                continue
            gaps = _in_order(term, entry.name) if len(term) >= 2 else None
            if gaps is None:
                return None
            total += max(1, 8 - gaps)
        return total


@functools.lru_cache(maxsize=4)
def _load(path: str) -> CsvBranchDirectory:
    branches: list[Branch] = []
    with open(path, encoding="utf-8-sig", newline="") as fh:
        lines = (line for line in fh if line.strip() and not line.startswith("#"))
        reader = csv.DictReader(lines)
        missing = {"code", "name", "bank", "city"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: the header lacks {', '.join(sorted(missing))}")
        for row in reader:
            code = (row.get("code") or "").strip()
            if not _CODE.match(code):
                raise ValueError(f"{path}: line {reader.line_num}: code {code!r} is not "
                                 "12 digits")
            branches.append(Branch(code=code, name=(row.get("name") or "").strip(),
                                   bank=(row.get("bank") or "").strip(),
                                   city=(row.get("city") or "").strip()))
    return CsvBranchDirectory(branches)
