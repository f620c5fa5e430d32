"""The Markdown report: machine facts, a summary of every target, then each section."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from bench.common import Config, SectionReport, table

PACKAGES = ("happydial", "aiohappyeyeballs", "uvloop", "matplotlib")
REPO = Path(__file__).resolve().parent.parent


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return platform.processor() or "unknown"
    for line in text.splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return platform.processor() or "unknown"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=REPO, capture_output=True, text=True, check=True, timeout=10
    ).stdout.strip()


def _git_revision() -> str:
    try:
        head = _git("rev-parse", "--short", "HEAD")
        dirty = _git("status", "--porcelain", "--", "src")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head} (src/ modified)" if dirty else head


def machine_info() -> list[list[str]]:
    """Rows of (fact, value) describing where the figures were taken."""
    rows = [
        ["CPU", f"{_cpu_model()} ({os.cpu_count()} logical CPUs)"],
        ["kernel", f"{platform.system()} {platform.release()}"],
        ["Python", f"{platform.python_implementation()} {sys.version.split()[0]}"],
        ["happydial revision", _git_revision()],
    ]
    rows += [[package, _version(package)] for package in PACKAGES]
    return rows


def render(cfg: Config, sections: Sequence[SectionReport], seconds: float) -> str:
    """The whole report as Markdown."""
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    mode = "quick (smoke test: figures are not meaningful)" if cfg.quick else "full"
    out = [
        "# happydial benchmarks",
        "",
        (
            f"Generated {now} by `python bench/run.py{' --quick' if cfg.quick else ''}`"
            f" in {seconds:.0f} s; mode: {mode}. See `bench/README.md` for what each figure means."
        ),
        "",
        "## Machine",
        "",
        table(["", ""], machine_info()),
        "",
    ]
    targets = [t for section in sections for t in section.targets]
    if targets:
        passed = sum(t.passed for t in targets)
        out += [
            "## Targets",
            "",
            f"{passed} of {len(targets)} met. Ratios: lower is better.",
            "",
            table(["target", "limit", "measured", "verdict"], [t.row() for t in targets]),
            "",
        ]
    for number, section in enumerate(sections, start=1):
        out += [f"## {number}. {section.title}", "", section.markdown, ""]
        out += [f"![{chart.stem}]({chart.name})" for chart in section.charts]
        if section.charts:
            out.append("")
    return "\n".join(out)
