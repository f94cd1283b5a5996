"""Does a change leave ``predict``'s outputs as they were? Run the same photos through two
versions of the code and compare every file byte for byte.

    python tools/same_outputs.py run PHOTOS OUT        # predict with every option that writes a file
    python tools/same_outputs.py compare BEFORE AFTER  # exit 1 and name each file that differs

``run`` is ``python -m hydralanet predict PHOTOS --out OUT --report --report-combined
--save-probabilities`` with the reports' date fixed (2026-01-02 03:04:05 UTC), so two runs of
the same code give the same bytes. ``compare`` compares masks, overlays, probabilities,
``findings.json``, ``record.json``, the CSVs, the shards and the PDFs as bytes, and
``summary.json`` less its timings (``seconds``).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
from pathlib import Path

TIMINGS = ("seconds",)


class _FixedDatetime(_dt.datetime):
    @classmethod
    def now(cls, tz=None):
        return cls(2026, 1, 2, 3, 4, 5, tzinfo=tz)


def run(photos: str, out: str) -> int:
    import importlib

    from hydralanet.cli import main

    try:
        pdf = importlib.import_module("hydralanet.report.pdf")
    except ModuleNotFoundError:  # the code before the subpackages: run from a checkout of it
        pdf = importlib.import_module("hydralanet.pdf_report")
    pdf.datetime = _FixedDatetime
    return main(["predict", photos, "--out", out, "--report", "--report-combined", "--save-probabilities"])


def _without_timings(value):
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if k not in TIMINGS}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


def differences(before: Path, after: Path) -> list[str]:
    """One line per file that is in only one folder or whose bytes differ."""
    a = {p.relative_to(before) for p in before.rglob("*") if p.is_file()}
    b = {p.relative_to(after) for p in after.rglob("*") if p.is_file()}
    found = [f"only in {before}: {p}" for p in sorted(a - b)] + [f"only in {after}: {p}" for p in sorted(b - a)]
    for rel in sorted(a & b):
        x, y = (before / rel).read_bytes(), (after / rel).read_bytes()
        if rel.name == "summary.json":
            x, y = (json.dumps(_without_timings(json.loads(d)), sort_keys=True) for d in (x, y))
        if x != y:
            found.append(f"differs: {rel}")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="predict with the reports' date fixed")
    r.add_argument("photos")
    r.add_argument("out")
    c = sub.add_parser("compare", help="compare two output folders")
    c.add_argument("before", type=Path)
    c.add_argument("after", type=Path)
    args = parser.parse_args(argv)
    if args.command == "run":
        return run(args.photos, args.out)
    found = differences(args.before, args.after)
    files = sum(1 for p in args.before.rglob("*") if p.is_file())
    print("\n".join(found + [f"{files} files compared, {len(found)} differ"]))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
