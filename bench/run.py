"""Run every benchmark section and write the report.

Usage: ``python bench/run.py [--quick] [--out DIR] [--only SECTION,...]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in {None, ""}:
    # Run as a script: import ``bench`` as a package from the repository root, and
    # keep this folder off the path so its modules cannot shadow top-level ones.
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    sys.path.insert(0, str(here.parent))

from bench.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
