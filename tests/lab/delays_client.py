"""``client.py`` with delay policies: a JSON spec names the policy, this builds it.

Run by :class:`tests.test_lab_delays.LanLab` in place of ``client.py``, with the same spec,
except that ``kwargs["happy_eyeballs_delay"]`` may be an object ``{"policy": name, ...}``:
``name`` is ``"constant"``, ``"exponential"`` or ``"lan"`` and the other keys are the
policy's arguments (``{"policy": "lan", "other": 0.25}`` is ``LanDelay(other=0.25)``). Every
other spec is passed to ``client.py`` unchanged, and the report is the same.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import happydial

# Run as a script: the repository root makes ``tests.lab.client`` importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.lab import client

POLICIES: dict[str, Any] = {
    "constant": happydial.ConstantDelay,
    "exponential": happydial.ExponentialDelay,
    "lan": happydial.LanDelay,
}
_make_call = client.make_call


def make_call(spec: dict[str, Any], *args: Any, **kwargs: Any) -> client.Call:
    """``client.make_call``, with a policy spec turned into the policy."""
    options = dict(spec.get("kwargs", {}))
    delay = options.get("happy_eyeballs_delay")
    if isinstance(delay, dict):
        arguments = dict(delay)
        options["happy_eyeballs_delay"] = POLICIES[arguments.pop("policy")](**arguments)
        spec = {**spec, "kwargs": options}
    return _make_call(spec, *args, **kwargs)


if __name__ == "__main__":
    client.make_call = make_call  # run() looks it up in client's namespace at each call
    client.main()
