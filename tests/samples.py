"""How a sample that a reader is shown is compared with what minictr really printed.

The tutorial (tests/test_tutorial.py) and the README (tests/test_readme.py) show output that
changes with every run and every host: a container's id, a PID, a date, a layer's digest, how
many of Docker's paths this kernel lacks. Both sides, the sample and the real output, are
normalised the same way, line by line, and then compared:

- the caller's own paths become the reader's (``substitutions``: this test's MINICTR_ROOT
  is /var/lib/minictr, its HOME /home/vagrant, as in the Vagrant box);
- runs of spaces and tabs become one space, and leading and trailing ones go: a column is
  as wide as its widest value, which varies;
- what varies between runs or hosts becomes a placeholder (``VARYING``): hex ids and digests
  (64 or 12 digits, or a few followed by ``…``), the 6 hex digits of a default name
  (``busybox-5c1e2a``), the 8 of a veth (``mctr9470fa38``), PIDs (``PID 9811``,
  ``/proc/9811/``, ``"pid": 9704``), dates, times and durations, namespace inode numbers
  (``mnt:[4026532180]``), MAC addresses and the IPv6 link-local addresses made of them,
  the counts of masked and read-only paths (with those absent on this kernel), the number
  of capabilities minictr itself has, the cgroup version a step names, how often the CPU
  limit throttled, and how many OOM kills one hog took (now and then two);
- with the option ``sizes``, byte sizes too (``2.0M``, ``1.1 MiB``, ``"size": 709``): only
  for samples whose sizes depend on the host (``du`` on its filesystem, memory in use);
- with the option ``numbers``, every number of two digits or more: for the columns of
  ``ps`` (PIDs) and of mountinfo and ``ip link`` (the kernel's own counters).

Blank lines at the start and the end of either side are left out (bash's ``time`` begins
with one). In a sample, ``…`` matches anything within a line, and a line that is only
``...`` matches any number of lines, none included. A sample is the whole output unless it
is an *excerpt*: then its lines must appear in the output in the same order, with anything
between them.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from functools import cache

GAP = "..."  # a line of its own: any number of lines
ANYTHING = "…"  # within a line: anything

_MONTH = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_UNIT = r"(?:second|minute|hour|day|week|month|year)s?"

# (pattern, placeholder), in this order: a date before the numbers in it.
VARYING: Sequence[tuple[re.Pattern[str], str]] = [(re.compile(p), r) for p, r in [
    (r"\b\d{4}-\d\d-\d\d[T ]\d\d:\d\d(?::\d\d(?:\.\d+)?)?(?:Z|[+-]\d\d:?\d\d)?", "<time>"),
    (rf"\b{_MONTH} +\d{{1,2}} +(?:\d\d:\d\d|\d{{4}})\b", "<time>"),
    (rf"\b(?:\d+|an?|About an?|Less than an?) {_UNIT} ago\b", "<time> ago"),
    (r"\b1[5-9]\d{8}(?:\.\d+)?\b", "<time>"),  # Unix time, 2017 to 2033
    (r"\b\d+m\d+\.\d+s\b", "<duration>"),  # bash's time
    (r"\b\d+\.\d+ s\b", "<duration>"),  # minictr's cpu time and wall time
    (r"(?=[0-9a-f]*\d)[0-9a-f]{4,}…", "<hex>…"),  # an id cut short by the sample itself
    (r"\b[0-9a-f]{64}\b", "<hex>"),
    (r"\b[0-9a-f]{12}\b", "<hex>"),
    (r"\bmctr[0-9a-f]{8}\b", "mctr<hex>"),
    (r"\b([A-Za-z0-9][A-Za-z0-9_.]*)-[0-9a-f]{6}\b", r"\1-<hex>"),
    (r"\b(PID|pid|netns) \d+\b", r"\1 <pid>"),
    (r"/proc/\d+/", "/proc/<pid>/"),
    (r'"pid": \d+', '"pid": <pid>'),
    (r":\[\d+\]", ":[<inode>]"),
    (r"\b[0-9a-f]{2}(?::[0-9a-f]{2}){5}\b", "<mac>"),
    (r"\bfe80::[0-9a-f:]+/64\b", "fe80::<mac>/64"),  # an address made from a MAC
    (r"\b\d+ paths? masked(?: \(\d+ absent on this kernel\))?, \d+ read-only"
     r"(?: \(\d+ absent\))?", "<masked and read-only paths>"),
    (r"\ball \d+ capabilities minictr has\b", "all <n> capabilities minictr has"),
    (r"\(cgroup v[12]\)", "(cgroup v<n>)"),
    (r"\bthrottled \d+ times?\b", "throttled <n> times"),
    (r"\b\d+ OOM kills?\b", "<n> OOM kills"),  # a second, now and then, as chapter 08 says
]]
NUMBERS = [(re.compile(r"(?<!\d)\d{2,}(?!\d)"), "<n>")]
SIZES: Sequence[tuple[re.Pattern[str], str]] = [(re.compile(p), r) for p, r in [
    (r"\b\d+(?:\.\d+)? ?(?:B|KiB|MiB|GiB|K|M|G)\b", "<size>"),
    (r'"size": \d+', '"size": <size>'),
]]


def normalise(line: str, substitutions: Mapping[str, str] = {}, sizes: bool = False,
              numbers: bool = False) -> str:
    """One line, as the comparison sees it."""
    for real in sorted(substitutions, key=len, reverse=True):
        line = line.replace(real, substitutions[real])
    for pattern, placeholder in [*VARYING, *(SIZES if sizes else []),
                                 *(NUMBERS if numbers else [])]:
        line = pattern.sub(placeholder, line)
    return re.sub(r"[ \t]+", " ", line).strip()


def _pattern(line: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in line.split(ANYTHING)))


def mismatch(sample: str, got: str, *, excerpt: bool = False, sizes: bool = False,
             numbers: bool = False, substitutions: Mapping[str, str] = {}) -> str | None:
    """None if the output matches the sample, else what a reader needs to fix it: the first
    sample line that was not found, and the two sides as compared."""
    want, have = ([normalise(line, substitutions, sizes, numbers)
                   for line in text.strip("\n").splitlines()] for text in (sample, got))
    if excerpt:
        want = [GAP, *(x for line in want for x in (line, GAP))]
    if _matches(tuple(want), tuple(have)):
        return None
    return _explain(want, have)


def _matches(want: tuple[str, ...], have: tuple[str, ...]) -> bool:
    """Like a glob over lines: GAP is any number of lines, a line a pattern for one."""
    patterns = [None if line == GAP else _pattern(line) for line in want]

    @cache
    def match(i: int, j: int) -> bool:
        if i == len(want):
            return j == len(have)
        if patterns[i] is None:  # a gap: swallow none, or one more line
            return match(i + 1, j) or (j < len(have) and match(i, j + 1))
        return j < len(have) and bool(patterns[i].fullmatch(have[j])) and match(i + 1, j + 1)

    return match(0, 0)


def _explain(want: list[str], have: list[str]) -> str:
    """The first line of the sample that the output lacks, in its order (gaps skip lines),
    then a diff of the two, normalised."""
    j, missing = 0, None
    for i, line in enumerate(want):
        if line == GAP:
            continue
        gap = i > 0 and want[i - 1] == GAP
        pattern = _pattern(line)
        while j < len(have) and not pattern.fullmatch(have[j]) and gap:
            j += 1
        if j < len(have) and pattern.fullmatch(have[j]):
            j += 1
            continue
        missing = line
        break
    first = (f"not in the output (in this place): {missing!r}\n" if missing is not None
             else "the output has more lines than the sample\n")
    diff = "".join(difflib.unified_diff([f"{x}\n" for x in want], [f"{x}\n" for x in have],
                                        "sample (normalised)", "output (normalised)"))
    return first + diff
