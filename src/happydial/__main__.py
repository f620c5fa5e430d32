"""``python -m happydial``: see :mod:`happydial._cli`."""

import sys

from ._cli import main

if __name__ == "__main__":  # pragma: no cover - run in a subprocess by test_cli
    sys.exit(main(prog="python -m happydial"))
