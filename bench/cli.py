"""Command line: run the sections, write ``report.md`` and the charts into ``--out``."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench import addresses, hints, lab, names, nat64, percall, races, report, tls
from bench import blocking as sync_section
from bench.common import Config, Section, SectionReport

# In report order. A new benchmark is a module with ``run(cfg) -> SectionReport``
# added here (and, if it needs settings, fields on ``Config``).
SECTIONS: dict[str, Section] = {
    "percall": percall.run,
    "races": races.run,
    "addresses": addresses.run,
    "lab": lab.run,
    "names": names.run,
    "nat64": nat64.run,
    "tls": tls.run,
    "hints": hints.run,
    "sync": sync_section.run,
}
DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/run.py", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="a few seconds in all: a smoke test for CI"
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})"
    )
    parser.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help=f"comma-separated sections to run (default: all of {', '.join(SECTIONS)})",
    )
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(names) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s): {', '.join(unknown)}")
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    cfg = Config.make(quick=args.quick, out=out)
    started = time.perf_counter()
    results: list[SectionReport] = []
    for name in names:
        t0 = time.perf_counter()
        print(f"[bench] {name} ...", flush=True)
        results.append(SECTIONS[name](cfg))
        print(f"[bench] {name} done in {time.perf_counter() - t0:.1f} s", flush=True)
    path = out / "report.md"
    path.write_text(report.render(cfg, results, time.perf_counter() - started), encoding="utf-8")
    print(f"[bench] wrote {path}")
    for section in results:
        for target in section.targets:
            verdict = "PASS" if target.passed else "FAIL"
            print(
                f"[bench] {verdict}: {target.name}"
                f" ({target.measured:.3f}x, limit {target.limit:.2f}x)"
            )
    return 0
