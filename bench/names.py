"""Section 5: connecting by host name, the resolvers against the peers (issue 13).

Two parts, every run a fresh ``bench/names_child.py`` process per implementation:

* **Local names**: ``dual.test`` (``127.0.0.1`` and ``::1`` in a private ``/etc/hosts``,
  bind-mounted in a mount namespace: ``unshare -m``, ``mount --bind``) and ``localhost``
  (which that file maps to ``127.0.0.1`` only, like this machine's), N connections one
  after the other and N all at once, to dual-stack loopback listeners the harness
  drains in a thread. What is timed is the resolver and the connection set-up: wall,
  CPU (the child's, all threads), threads alive at the peak, peak RSS.
* **Slow DNS**: in the network lab, N distinct names whose A and AAAA answers each take
  50 ms on the lab's DNS server, all at once. A resolver that runs a handful of lookups
  at a time queues them behind each other.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import Config, SectionReport, Target, median, table

REPO = Path(__file__).resolve().parent.parent
TITLE = "Connecting by host name: resolvers vs loop.getaddrinfo and open_connection"

IMPLS = ("happydial", "happydial-aiodns", "happydial-dnspython", "aiohappyeyeballs", "asyncio")
PEER = "aiohappyeyeballs"  # loop.getaddrinfo + start_connection: the targets' yardstick
NEEDS = {"happydial-aiodns": "aiodns", "happydial-dnspython": "dns", PEER: PEER}
HOSTS_FILE = "127.0.0.1 localhost\n127.0.0.1 dual.test\n::1 dual.test\n"
NAMES = ("dual.test", "localhost")
SEQ_LIMIT = 1.2
CONC_LIMIT = 1.0
RSS_LIMIT = 1.1
THREAD_LIMIT = 64
SLOW_LIMIT = 0.25
DNS_DELAY = 0.05
CHART_COLOURS = {
    "happydial-aiodns": "#5aae61",
    "happydial-dnspython": "#a6dba0",
    "asyncio": "#2166ac",
}


@dataclass(frozen=True)
class Sizes:
    seq: int
    conc: int
    slow_names: int
    rounds: int
    slow_rounds: int


def sizes(cfg: Config) -> Sizes:
    return Sizes(
        cfg.names_seq, cfg.names_conc, cfg.names_slow, cfg.names_rounds, cfg.names_slow_rounds
    )


def available() -> list[str]:
    """The implementations importable here."""
    return [i for i in IMPLS if importlib.util.find_spec(NEEDS.get(i, "happydial")) is not None]


# -- local names ------------------------------------------------------------------------------


class DualStackListeners:
    """``127.0.0.1`` and ``::1`` listening on one port, drained by a thread."""

    def __init__(self) -> None:
        self._stack = ExitStack()
        self._stop = threading.Event()
        self._accepted: list[socket.socket] = []
        self.v6 = self._stack.enter_context(socket.socket(socket.AF_INET6))
        self.v6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        self.v6.bind(("::1", 0))
        self.port: int = self.v6.getsockname()[1]
        self.v4 = self._stack.enter_context(socket.socket(socket.AF_INET))
        self.v4.bind(("127.0.0.1", self.port))
        self._threads = [
            threading.Thread(target=self._drain, args=(sock,)) for sock in (self.v6, self.v4)
        ]
        for sock in (self.v6, self.v4):
            sock.listen(4096)
            sock.settimeout(0.05)
        for thread in self._threads:
            thread.start()

    def _drain(self, sock: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.close()

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()
        self._stack.close()


def _no_mount_namespace() -> str:
    """Why this machine cannot bind-mount a private ``/etc/hosts``, or ``""``."""
    if os.geteuid() != 0:
        return "root"
    try:
        probe = subprocess.run(
            ["unshare", "--mount", "true"], capture_output=True, check=False, timeout=10
        )
    except OSError as exc:
        return f"unshare(1): {exc}"
    return "" if probe.returncode == 0 else f"unshare --mount: {probe.stderr.decode()[:200]}"


@contextmanager
def private_hosts() -> Iterator[list[str]]:
    """A command prefix running its program with :data:`HOSTS_FILE` as ``/etc/hosts``."""
    with tempfile.TemporaryDirectory(prefix="happydial-bench-") as folder:
        hosts = Path(folder) / "hosts"
        hosts.write_text(HOSTS_FILE, encoding="ascii")
        script = f'mount --bind {hosts} /etc/hosts && exec "$0" "$@"'
        yield ["unshare", "--mount", "sh", "-c", script]


def run_child(prefix: Sequence[str], spec: dict[str, Any]) -> dict[str, Any]:
    command = [*prefix, sys.executable, "-m", "bench.names_child", json.dumps(spec)]
    proc = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, check=False, timeout=600
    )
    if proc.returncode != 0:
        raise RuntimeError(f"names child failed ({proc.returncode}): {proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    if result["errors"]:
        errors = result["errors"]
        example = next(iter(errors))
        print(f"  {spec['impl']} {spec['mode']}: {sum(errors.values())} errors, e.g. {example}")
    return result


Results = dict[tuple[str, str, str], list[dict[str, Any]]]
"""(name, mode, implementation) -> one result per round."""


def measure_local(impls: Sequence[str], size: Sizes) -> Results:
    results: Results = {}
    listeners = DualStackListeners()
    try:
        with private_hosts() as prefix:
            for r in range(size.rounds):
                for name in NAMES:
                    for mode, count in (("seq", size.seq), ("conc", size.conc)):
                        shift = r % len(impls)
                        for impl in [*impls[shift:], *impls[:shift]]:
                            spec = {
                                "impl": impl,
                                "hosts": [name] * count,
                                "port": listeners.port,
                                "mode": mode,
                                "warmup": [name] * 20,
                            }
                            result = run_child(prefix, spec)
                            results.setdefault((name, mode, impl), []).append(result)
    finally:
        listeners.close()
    return results


# -- slow DNS in the lab ----------------------------------------------------------------------


def measure_slow(impls: Sequence[str], size: Sizes) -> tuple[Results, str]:
    """Every implementation connects to N fresh names at once in the lab; '' or why not."""
    try:
        from tests.lab.netns import PORT, Lab, LabUnavailableError, Rule
    except ImportError as exc:  # pragma: no cover - the harness runs from a checkout
        return {}, f"cannot import tests.lab: {exc}"
    try:
        lab = Lab.start()
    except LabUnavailableError as exc:
        return {}, str(exc)
    results: Results = {}
    try:
        (v6,), (v4,) = lab.allocate(v6=1, v4=1)
        records = {
            "AAAA": {"addresses": [v6], "delay": DNS_DELAY},
            "A": {"addresses": [v4], "delay": DNS_DELAY},
        }
        plan = {
            (r, impl): [f"n{i}-{impl}-{r}.names.bench.lab.test" for i in range(size.slow_names)]
            for r in range(size.slow_rounds)
            for impl in [*impls[r % len(impls) :], *impls[: r % len(impls)]]  # the order rotates
        }
        zone = {name: records for names in plan.values() for name in names}
        zone["warm.names.bench.lab.test"] = {
            "AAAA": {"addresses": [v6], "delay": 0.0},
            "A": {"addresses": [v4], "delay": 0.0},
        }
        lab.configure(rules={v6: Rule(), v4: Rule()}, live=[v6, v4])
        items = list(zone.items())
        for start in range(0, len(items), 200):  # the server reads one control line each
            lab.configure(zone=dict(items[start : start + 200]))
        prefix = ["ip", "netns", "exec", lab.client_ns]
        for (_, impl), names in plan.items():
            spec = {
                "impl": impl,
                "hosts": names,
                "port": PORT,
                "mode": "conc",
                "warmup": ["warm.names.bench.lab.test"] * 2,
            }
            results.setdefault(("slow", "conc", impl), []).append(run_child(prefix, spec))
    finally:
        lab.close()
    return results, ""


# -- the report -------------------------------------------------------------------------------


def _med(results: Results, key: tuple[str, str, str], field: str) -> float:
    return median([float(run[field]) for run in results.get(key, [])])


def _local_table(results: Results, impls: Sequence[str], size: Sizes) -> str:
    rows = []
    for name in NAMES:
        for mode, count in (("seq", size.seq), ("conc", size.conc)):
            what = (
                f"{count:,} sequential, `{name}`, per connect"
                if mode == "seq"
                else f"{count:,} concurrent, `{name}`"
            )
            row = [what]
            for impl in impls:
                key = (name, mode, impl)
                if key not in results:
                    row.append("n/a")
                    continue
                wall, cpu = _med(results, key, "wall"), _med(results, key, "cpu")
                if mode == "seq":
                    cell = f"{wall / count * 1e6:.0f} / {cpu / count * 1e6:.0f} us"
                else:
                    cell = f"{wall:.2f} / {cpu:.2f} s"
                threads = _med(results, key, "threads") - _med(results, key, "base_threads")
                rss = _med(results, key, "rss_kib") / 1024
                row.append(f"{cell}, {threads:.0f} thr, {rss:.0f} MiB")
            rows.append(row)
    return table(["work (wall / CPU, extra threads at peak, peak RSS)", *impls], rows)


def _spread(
    results: Results, key: tuple[str, str, str], field: str, scale: float, digits: int = 2
) -> str:
    values = [float(run[field]) * scale for run in results.get(key, [])]
    if not values:
        return "n/a"
    digits = 0 if scale > 1 else digits
    return f"{min(values):.{digits}f}-{max(values):.{digits}f}"


def _spread_table(results: Results, size: Sizes) -> str:
    """Min-max over the rounds of happydial's and the peer's wall and CPU times."""
    rows = []
    for name in NAMES:
        for mode, count in (("seq", size.seq), ("conc", size.conc)):
            scale = 1e6 / count if mode == "seq" else 1.0
            unit = "us per connect" if mode == "seq" else "s"
            cells = [
                _spread(results, (name, mode, impl), field, scale)
                for impl in ("happydial", PEER)
                for field in ("wall", "cpu")
            ]
            rows.append([f"{mode} `{name}` ({unit})", *cells])
    return table(["work", "happydial wall", "happydial CPU", f"{PEER} wall", f"{PEER} CPU"], rows)


def _local_targets(results: Results) -> list[Target]:
    targets = []
    for name in NAMES:
        for mode, limit in (("seq", SEQ_LIMIT), ("conc", CONC_LIMIT)):
            ours, peer = (name, mode, "happydial"), (name, mode, PEER)
            if ours not in results or peer not in results:
                continue
            label = f"names: happydial / loop.getaddrinfo+aiohappyeyeballs, {mode} {name}"
            for field in ("wall", "cpu"):
                measured = _med(results, ours, field) / _med(results, peer, field)
                targets.append(Target(f"{label}, {field}", measured, limit))
            if mode == "conc":
                rss = _med(results, ours, "rss_kib") / _med(results, peer, "rss_kib")
                targets.append(Target(f"{label}, peak RSS", rss, RSS_LIMIT))
                extra = max(run["threads"] - run["base_threads"] for run in results[ours])
                targets.append(
                    Target(
                        f"names: happydial threads at peak / {THREAD_LIMIT}, conc {name}",
                        extra / THREAD_LIMIT,
                        1.0,
                    )
                )
    return targets


def run(cfg: Config) -> SectionReport:
    """Section 5."""
    size = sizes(cfg)
    impls = available()
    missing = [i for i in IMPLS if i not in impls]
    text = [
        (
            f"Median of {size.rounds} round(s), one fresh process per implementation and"
            " run, the order rotating. happydial: `connect(name, port)` with the default"
            " resolver (getaddrinfo on happydial's thread pool) or `AiodnsResolver` /"
            " `DnspythonResolver`; aiohappyeyeballs: `loop.getaddrinfo` then"
            " `start_connection(happy_eyeballs_delay=0.25)`; asyncio:"
            " `asyncio.open_connection`. Threads: the most the process had at once beyond"
            " those it had before its first connect (the c-ares resolver's own event and"
            " shutdown threads count)."
        ),
        "",
    ]
    targets: list[Target] = []
    chart: dict[str, dict[str, float]] = {impl: {} for impl in impls}
    limits: dict[str, float] = {}
    why_not = _no_mount_namespace()
    if why_not:
        text += [f"Local names: skipped (a private /etc/hosts needs {why_not}).", ""]
    else:
        local = measure_local(impls, size)
        targets += _local_targets(local)
        for name in NAMES:
            for mode, limit in (("seq", SEQ_LIMIT), ("conc", CONC_LIMIT)):
                group = f"{mode} {name}"
                limits[group] = limit
                peer = _med(local, (name, mode, PEER), "wall")
                for impl in impls:
                    chart[impl][group] = _med(local, (name, mode, impl), "wall") / peer
        text += ["**Local names** (loopback listeners):", "", _local_table(local, impls, size), ""]
        text += ["Spread (min-max over the rounds):", "", _spread_table(local, size), ""]
    slow, why = measure_slow(impls, size)
    if why:
        text += [f"Slow DNS: skipped (the network lab is unavailable: {why}).", ""]
    else:
        rows = []
        base = _med(slow, ("slow", "conc", "asyncio"), "wall")
        for impl in impls:
            wall = _med(slow, ("slow", "conc", impl), "wall")
            threads = _med(slow, ("slow", "conc", impl), "threads")
            threads -= _med(slow, ("slow", "conc", impl), "base_threads")
            chart[impl][f"{size.slow_names} slow names"] = wall / base
            limits[f"{size.slow_names} slow names"] = SLOW_LIMIT
            failed = sum(sum(run["errors"].values()) for run in slow[("slow", "conc", impl)])
            spread = _spread(slow, ("slow", "conc", impl), "wall", 1.0, 3)
            rows.append(
                [impl, f"{wall:.3f}", spread, f"{wall / base:.3f}x", f"{threads:.0f}", str(failed)]
            )
            if impl == "happydial":  # the target is the default resolver's
                label = f"names: happydial / asyncio.open_connection, {size.slow_names} slow names"
                targets.append(Target(label, wall / base, SLOW_LIMIT))
        text += [
            (
                f"**Slow DNS** ({size.slow_names} distinct names at once in the network lab,"
                f" A and AAAA each answered after {DNS_DELAY * 1000:.0f} ms; median of"
                f" {size.slow_rounds} round(s), the order rotating):"
            ),
            "",
            table(
                [
                    "implementation",
                    "wall s",
                    "min-max",
                    "vs asyncio",
                    "extra threads at peak",
                    "failed",
                ],
                rows,
            ),
            "",
            (
                "*failed*: connections that failed, over all rounds. c-ares (1.32 and later)"
                " scales its per-try timeout to the answer times it has seen, and the lab's"
                " resolv.conf allows one try: answers slowed down by a burst of queries time"
                " out. Failed lookups end early, so a row with failures is not comparable."
                " The lab's DNS path (a userspace relay between two TUN devices and a"
                " Python DNS server, on the same cores) has a throughput of its own: a"
                " resolver with every query in flight at once (the aiodns row) shows what it"
                " allowed in that run; asyncio's executor keeps a few lookups in flight and"
                " is bound by its own queue instead."
            ),
            "",
        ]
    if missing:
        text.append(f"Not installed, so not measured: {', '.join(missing)}.")
    charts = []
    if any(chart.values()):
        from bench import plot  # matplotlib: only when there is something to draw

        plot.COLOURS.update(CHART_COLOURS)
        charts.append(
            plot.grouped_bars(
                cfg.out / "names.png",
                chart,
                title=(
                    "Connecting by name: wall time vs loop.getaddrinfo + aiohappyeyeballs"
                    " (local) and asyncio.open_connection (slow names)"
                ),
                ylabel="wall time ratio (lower is better)",
                baseline=1.0,
                limits=limits,
            )
        )
    return SectionReport(TITLE, "\n".join(text), targets, charts)
