"""Argument checks shared by the public functions: one place, one wording.

Every check raises :class:`TypeError` for a value of the wrong kind and
:class:`ValueError` for a bad value, and both name the argument and the value. They
return the value as the code below them uses it (a ``float`` for seconds), so a
caller checks and converts in one line. The ``is not None`` tests come first where
``None`` is the common value: these run on every connection (see ``bench/``).
"""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # a leaf at run time: a policy is recognised by its shape
    from ._delays import DelayPolicy

__all__ = [
    "check_attempt_delay",
    "check_callable",
    "check_count",
    "check_delay",
    "check_host_port",
    "check_interleave",
    "check_limits",
    "check_loop",
    "check_seconds",
    "check_start_options",
    "is_delay_policy",
    "is_int",
]


def is_int(value: object) -> bool:
    """Whether *value* is an int, but not a bool (True as a port or a count is a bug)."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_count(value: object, name: str) -> int:
    """An int of at least 1."""
    if not is_int(value):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < 1:  # type: ignore[operator]
        raise ValueError(f"{name} must be at least 1, got {value!r}")
    return value  # type: ignore[return-value]


def check_delay(value: object, name: str, *, allow_zero: bool) -> float | None:
    """An optional, finite, non-negative (or positive) number of seconds."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds or None, got {value!r}")
    if math.isnan(value) or math.isinf(value) or value < 0 or (value == 0 and not allow_zero):
        bound = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{name} must be a finite, {bound} number of seconds, got {value!r}")
    return float(value)


def is_delay_policy(value: object) -> bool:
    """Whether *value* has the shape of a delay policy: a str ``name``, a callable ``delay``."""
    return (
        not isinstance(value, type)  # the class ConstantDelay, not an instance of it
        and callable(getattr(value, "delay", None))
        and isinstance(getattr(value, "name", None), str)
    )


def check_attempt_delay(value: object, name: str) -> float | DelayPolicy | None:
    """``happy_eyeballs_delay``: seconds (0 allowed), ``None``, or a delay policy.

    A policy is any object with a ``str`` ``name`` and a callable ``delay`` (see
    :class:`happydial.DelayPolicy`); numbers keep their meaning and are not clamped.
    """
    if value is None or isinstance(value, (int, float)):
        return check_delay(value, name, allow_zero=True)
    if is_delay_policy(value):
        return value  # type: ignore[return-value]
    raise TypeError(
        f"{name} must be a number of seconds, None, or a DelayPolicy: an object with a"
        f" str name and a delay method, got {value!r}"
    )


def check_seconds(value: object, name: str, *, minimum: float) -> float:
    """A finite number of seconds of at least *minimum* (``None`` is refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, got {value!r}")
    if math.isnan(value) or math.isinf(value) or value < minimum:
        raise ValueError(f"{name} must be a finite number of seconds >= {minimum}, got {value!r}")
    return float(value)


def check_interleave(interleave: object) -> int:
    """The First Address Family Count of ``start_connection``: 0 keeps the order."""
    if isinstance(interleave, bool) or not isinstance(interleave, int):
        raise TypeError(f"interleave must be an int or None, got {interleave!r}")
    if interleave < 0:
        raise ValueError(f"interleave must be 0 (keep the order) or more, got {interleave!r}")
    return interleave


def check_callable(value: object, name: str) -> None:
    """A callable, or ``None``."""
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be callable or None, got {value!r}")


def check_host_port(host: object, port: object) -> None:
    """A non-empty host string and a port in 0-65535."""
    if not isinstance(host, str):
        raise TypeError(f"host must be a str, got {host!r}")
    if not host:
        raise ValueError("host must not be empty")
    if not is_int(port):
        raise TypeError(f"port must be an int, got {port!r}")
    if not 0 <= port <= 65535:  # type: ignore[operator]
        raise ValueError(f"port must be in 0-65535, got {port!r}")


def check_loop(loop: asyncio.AbstractEventLoop | None) -> asyncio.AbstractEventLoop:
    """The running loop; a *loop* argument (kept for compatibility) must be it."""
    running = asyncio.get_running_loop()
    if loop is not None and loop is not running:
        raise ValueError(f"loop must be the running event loop, got {loop!r}")
    return running


# RFC 8305 leaves the number of attempts in flight open; curl 8.20 caps it at 6.
# With the 250 ms delay, a 7th attempt is due 1.5 s into a race none has answered.
DEFAULT_MAX_IN_FLIGHT = 6


def check_limits(max_in_flight: object, timeout: object) -> tuple[int | None, float | None]:
    """``max_in_flight`` (``None`` or at least 1) and the overall ``timeout``."""
    if max_in_flight is not None:
        max_in_flight = check_count(max_in_flight, "max_in_flight")
    if timeout is not None:
        timeout = check_delay(timeout, "timeout", allow_zero=False)
    return max_in_flight, timeout


def check_start_options(
    delay: object, timeout: object, interleave: object, socket_factory: object, trace: object
) -> tuple[float | DelayPolicy | None, float | None, int | None]:
    """``start_connection``'s options; ``is not None`` first, as None is common."""
    if delay is not None:
        delay = check_attempt_delay(delay, "happy_eyeballs_delay")
    if timeout is not None:
        timeout = check_delay(timeout, "attempt_timeout", allow_zero=False)
    if interleave is not None:
        interleave = check_interleave(interleave)
    if socket_factory is not None:
        check_callable(socket_factory, "socket_factory")
    if trace is not None:
        check_callable(trace, "trace")
    return delay, timeout, interleave
