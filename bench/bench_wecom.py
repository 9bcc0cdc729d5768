"""What durable delivery and WeCom formatting cost, each beside its baseline from the same run.

    .venv/bin/python bench/bench_wecom.py [N]

1. ``Delivery.put`` (one SQLite WAL transaction per item): an alert under the default
   ``fsync="alerts"`` (fsynced: survives a power cut) against the cheapest power-safe baseline,
   appending the same msgpack bytes to a file with an fsync each (the file sink with
   ``fsync = true``); a stall event (not fsynced: survives a crash of lgf) against a plain
   in-memory append (what "no queue" costs).
2. Through the queue to a sink that does nothing: items per second delivered by the worker
   (read, decode, call, acknowledge), against calling the same sink directly.
3. Packing 10,000 alerts into WeCom digest messages, against ``json.dumps`` of the same alerts
   (the least any sender must do to put them on the wire).

No assertion on speed: the figures are printed for a human to compare. Runs in a few seconds.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time

from lgf import Event
from lgf.clock import ManualClock
from lgf.delivery import Delivery
from lgf.event import to_msgpack
from lgf.sinks.wecom_format import digest_messages
from lgf.stats import Stats


def alerts(n: int) -> list[Event]:
    return [Event(kind="alert", pid=4000 + i % 50, comm="api", cause=("lock", "channel")[i % 2],
                  severity=("critical", "warning", "info")[i % 3], duration_ns=(i + 1) * 10**6,
                  tags={"service": "checkout"}, stack_summary=["main.handler", "sync.(*Mutex).Lock"],
                  extra={"count": 3, "worst_ns": 2 * 10**8}) for i in range(n)]


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_put(events: list[Event], tmp: str) -> None:
    n = len(events)

    def put(items: list[Event], name: str) -> float:
        d = Delivery(object(), name, tmp, Stats())
        took = timed(lambda: [d.put(e) for e in items])
        d.stop(0)
        return took

    def file_fsync() -> float:
        with open(os.path.join(tmp, "baseline.msgpack"), "ab") as fh:
            def go():
                for e in events:
                    fh.write(to_msgpack(e))
                    fh.flush()
                    os.fsync(fh.fileno())
            return timed(go)

    memory: list[bytes] = []
    base_mem = timed(lambda: [memory.append(to_msgpack(e)) for e in events])
    base_file = file_fsync()
    full = put(events, "alerts")
    normal = put([Event.from_dict({**e.to_dict(), "kind": "stall"}) for e in events], "stalls")
    us = lambda s: s / n * 1e6  # noqa: E731
    print(f"1. put, {n} items (µs per item)")
    print(f"   baseline in-memory append            {us(base_mem):9.1f}")
    print(f"   baseline file append + fsync          {us(base_file):9.1f}")
    print(f"   Delivery.put, an alert (fsynced)      {us(full):9.1f}   {full / base_file:5.2f}x file+fsync")
    print(f"   Delivery.put, a stall event           {us(normal):9.1f}   {normal / base_mem:5.1f}x in-memory")


def bench_worker(events: list[Event], tmp: str) -> None:
    class Null:
        def send(self, event):
            pass

    sink = Null()
    direct = timed(lambda: [sink.send(e) for e in events])
    d = Delivery(sink, "worker", tmp, Stats(), clock=ManualClock())
    for e in events:
        d.put(e)

    def drain():
        d.start()
        while d.depth():
            time.sleep(0.001)

    through = timed(drain)
    d.stop(1)
    n = len(events)
    print(f"2. delivery to a sink that does nothing, {n} items (items per second)")
    print(f"   baseline direct sink.send             {n / direct:12,.0f}")
    print(f"   through the queue's worker            {n / through:12,.0f}   "
          f"{through / n * 1e6:.0f} µs per item")


def bench_digest() -> None:
    dicts = [e.to_dict() for e in alerts(10_000)]
    base = timed(lambda: [json.dumps(d, ensure_ascii=False) for d in dicts])
    messages: list = []
    took = timed(lambda: messages.extend(digest_messages(dicts, "markdown", why="10000 pending")))
    print("3. 10,000 alerts to WeCom digests (ms)")
    print(f"   baseline json.dumps of each alert     {base * 1e3:9.1f}")
    print(f"   digest_messages                       {took * 1e3:9.1f}   {took / base:5.2f}x json.dumps; "
          f"{len(messages)} messages, {10_000 / len(messages):.0f} alerts each")


def main() -> None:
    logging.getLogger("lgf").setLevel(logging.ERROR)  # "items stay queued" is the point here, not news
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    events = alerts(n)
    with tempfile.TemporaryDirectory(prefix="lgf-bench-") as tmp:
        bench_put(events, tmp)
        bench_worker(events, tmp)
    bench_digest()


if __name__ == "__main__":
    main()
