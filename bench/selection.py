"""What RFC 6724 ordering costs per call: ``python -m bench.selection``.

Figures, best of 7 repeats (microseconds per call):

* ``sort_addr_infos`` of 2 and 8 addresses (half IPv6, half IPv4) with sources from a
  mapping, and from a warm :class:`happydial.SourceAddressCache` (what ``connect()``
  would pay per feed);
* the same with every source probed (no cache: what ``getaddrinfo`` pays);
* one :func:`happydial.probe_source` (socket, connect, getsockname, close);
* ``interleave_addr_infos`` of the same lists, for scale.
"""

from __future__ import annotations

import functools
import socket
import sys
import timeit
from collections.abc import Callable

import happydial
from happydial import AddrInfoType


def _addresses(count: int) -> list[AddrInfoType]:
    v6: list[AddrInfoType] = [
        (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (f"::1{i:x}", 443, 0, 0))
        for i in range(count // 2)
    ]
    v4: list[AddrInfoType] = [
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", (f"127.0.0.{i + 1}", 443))
        for i in range(count - count // 2)
    ]
    return v6 + v4


def _best_us(stmt: Callable[[], object], number: int) -> float:
    return min(timeit.repeat(stmt, number=number, repeat=7)) / number * 1e6


def _sorting(infos: list[AddrInfoType], sources: happydial.SourcesType) -> Callable[[], object]:
    return functools.partial(happydial.sort_addr_infos, infos, sources=sources)


def main() -> None:
    """Time each operation and print a Markdown table."""
    rows: list[tuple[str, float]] = []
    for count in (2, 8):
        infos = _addresses(count)
        cache = happydial.SourceAddressCache()
        mapping = {ai[4][0]: cache(ai) for ai in infos}
        number = 20_000 if count == 2 else 5_000
        rows += [
            (f"sort {count}, mapping", _best_us(_sorting(infos, mapping), number)),
            (f"sort {count}, warm cache", _best_us(_sorting(infos, cache), number)),
            (
                f"sort {count}, a probe per address",
                _best_us(_sorting(infos, happydial.probe_source), number // 10),
            ),
            (
                f"interleave {count} (for scale)",
                _best_us(functools.partial(happydial.interleave_addr_infos, infos), number),
            ),
        ]
    one = _addresses(2)[1]
    rows.append(("probe_source, one IPv4", _best_us(lambda: happydial.probe_source(one), 5_000)))
    sys.stdout.write("| operation | us per call |\n|---|---|\n")
    for name, micros in rows:
        sys.stdout.write(f"| {name} | {micros:.1f} |\n")


if __name__ == "__main__":
    main()
