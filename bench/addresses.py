"""Section 3: per-call cost of the address layer, happydial vs aiohappyeyeballs (timeit).

Inputs hold half IPv6 and half IPv4 addresses, IPv6 first (a dual-stack answer).
``pop`` and ``remove`` edit their list in place, so every call gets a fresh copy;
the cost of that copy (timed alone) is subtracted. Each figure is the best of
``timeit_repeats`` repeats, the implementations alternating repeat by repeat.
happydial validates its input on every call (aiohappyeyeballs does not): that is
part of what is measured.
"""

from __future__ import annotations

import timeit
from collections.abc import Callable

import aiohappyeyeballs
from aiohappyeyeballs import impl as aiohappyeyeballs_impl

import happydial
from bench.common import IMPLS, AddrInfo, Config, SectionReport, addr_info, ratio, table

SIZES = (2, 10, 100)
Op = Callable[[list[AddrInfo]], object]


def addresses(count: int) -> list[AddrInfo]:
    """*count* addresses, the first half IPv6, the rest IPv4."""
    v6 = [addr_info(f"2001:db8::{i + 1:x}", 443) for i in range(count // 2)]
    v4 = [addr_info(f"192.0.2.{i + 1}", 443) for i in range(count - count // 2)]
    return v6 + v4


def _ops(victim: tuple[str, int] | tuple[str, int, int, int]) -> dict[str, dict[str, Op]]:
    """Operation -> implementation -> call on a list (which it may mutate)."""
    return {
        "interleave": {
            "happydial": happydial.interleave_addr_infos,
            "aiohappyeyeballs": aiohappyeyeballs_impl._interleave_addrinfos,
        },
        "pop (interleave=1)": {
            "happydial": happydial.pop_addr_infos_interleave,
            "aiohappyeyeballs": aiohappyeyeballs.pop_addr_infos_interleave,
        },
        "remove (exact match)": {
            "happydial": lambda a: happydial.remove_addr_infos(a, victim),
            "aiohappyeyeballs": lambda a: aiohappyeyeballs.remove_addr_infos(a, victim),
        },
    }


def _best(stmt: Callable[[], object], number: int) -> float:
    return timeit.timeit(stmt, number=number) / number


def _time_op(ops: dict[str, Op], src: list[AddrInfo], cfg: Config) -> dict[str, float]:
    """Best per-call seconds for each implementation, net of copying the input."""

    def call(op: Op) -> Callable[[], object]:
        return lambda: op(src.copy())

    def copy_only() -> object:
        return src.copy()

    # Calibrate: enough calls that one repeat of the slowest takes ~timeit_seconds.
    slowest = max(_best(call(op), 100) for op in ops.values())
    number = max(10, int(cfg.timeit_seconds / max(slowest, 1e-9)))
    best: dict[str, float] = {name: float("inf") for name in [*ops, "copy"]}
    for rep in range(cfg.timeit_repeats):
        names = list(ops) if rep % 2 == 0 else list(ops)[::-1]
        for name in names:
            best[name] = min(best[name], _best(call(ops[name]), number))
        best["copy"] = min(best["copy"], _best(copy_only, number))
    return {name: max(best[name] - best["copy"], 0.0) for name in ops}


def run(cfg: Config) -> SectionReport:
    """Section 3."""
    rows: list[list[str]] = []
    for size in SIZES:
        src = addresses(size)
        victim = src[size // 2][4]  # an entry in the middle
        for op_name, ops in _ops(victim).items():
            per_call = _time_op(ops, src, cfg)
            mine, peer = per_call["happydial"], per_call["aiohappyeyeballs"]
            rows.append(
                [
                    op_name,
                    str(size),
                    f"{mine * 1e6:.2f}",
                    f"{peer * 1e6:.2f}",
                    ratio(mine / peer) if peer > 0 else "n/a",
                ]
            )
    header = ["operation", "addresses", "happydial µs", "aiohappyeyeballs µs"]
    header += ["happydial / aiohappyeyeballs"]
    text = [
        (
            "Per-call time (best of"
            f" {cfg.timeit_repeats} timeit repeats; copying the input list is subtracted)."
            f" Inputs: half IPv6 then half IPv4. Compared: {', '.join(IMPLS)}"
            " (`interleave_addr_infos` vs the private"
            " `aiohappyeyeballs.impl._interleave_addrinfos`,"
            " and the two public `pop_addr_infos_interleave` / `remove_addr_infos`). No target"
            " is set for this section."
        ),
        "",
        table(header, rows),
    ]
    return SectionReport("Address layer", "\n".join(text))
