"""What the alert journal costs per stall, beside the alert policy without it, in the same run.

    .venv/bin/python bench/bench_journal.py [N]

``AlertEngine.observe_batch`` of N stalls over the alert threshold (each one enters an open
group), with and without the journal (``lgf.journal``, SQLite WAL, ``synchronous=NORMAL``),
committed as the host does: once per batch of events it takes from its queue,
``lgf.run.BATCH_EVENTS`` in a burst (and once per stall when they trickle in one by one, the
worst case); then closing every group (one transaction for all the groups a tick closes) and
forgetting the delivered alerts. The stalls are realistic in size (a 20-frame stack, enrichment
dicts). The journal keeps a stall in full only when it became its group's worst: the stalls come
with durations in random order (a few new worsts per group), and then each longer than the one
before (every stall a new worst: the journal's worst case, the last one of each group in each
batch kept in full). Prints µs per stall and
the ratio. No assertion on speed: figures for a human to compare.
"""

from __future__ import annotations

import random
import sys
import tempfile
import time

from lgf import Event
from lgf import config as cfg
from lgf.alerts import AlertEngine
from lgf.journal import AlertJournal
from lgf.run import BATCH_EVENTS
from lgf.stats import Stats


def stalls(n: int, rising: bool) -> list[Event]:
    frame = {"func": "main.handler", "file": "/src/app/handler.go", "line": 120, "pc": 0x4a1234, "inlined": False}
    extra = list(range(n))
    if not rising:
        random.Random(1).shuffle(extra)
    return [Event(pid=4000 + i % 20, comm="api", cause=("lock", "channel", "select")[i % 3], goid=i,
                  duration_ns=60_000_000 + extra[i], start_ns=10**12 + i * 10**6,
                  end_ns=10**12 + i * 10**6 + 60_000_000 + extra[i],
                  wait_reason="sync.Mutex.Lock", stack=[frame] * 20, stack_summary=["main.handler"],
                  sched={"goroutines": 120, "gomaxprocs": 2}, gc_phase={"phase": "off"})
            for i in range(n)]


def run(n: int, journaled: bool, spool_dir: str, batch: int = BATCH_EVENTS, rising: bool = False) -> tuple[float, float]:
    config = cfg.validate({"lgf": {"spool_dir": spool_dir, "report_interval": "1h"}}, {})
    journal = AlertJournal(spool_dir) if journaled else None
    engine = AlertEngine(config, Stats(), journal=journal)
    events = stalls(n, rising)
    t0 = time.perf_counter()
    for i in range(0, n, batch):
        engine.observe_batch(events[i:i + batch])
        engine.commit()  # what Pipeline.process_batch does after each batch
    t1 = time.perf_counter()
    alerts = engine.due(2**63 - 1)
    engine.delivered(a.id for a in alerts)
    if journal is not None:
        journal.close()
    t2 = time.perf_counter()
    return (t1 - t0) / n * 1e6, (t2 - t1) * 1e3


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    for _ in range(2):  # the second round is the one to read (warm caches)
        with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
            bare, bare_close = run(n, False, a)
            jour, jour_close = run(n, True, b)
        with tempfile.TemporaryDirectory() as c:
            rising, _ = run(n, True, c, rising=True)
        with tempfile.TemporaryDirectory() as c:
            one, _ = run(n, True, c, batch=1)
    print(f"alert policy, {n} stalls into open groups: {bare:.1f} µs/stall without the journal, "
          f"{jour:.1f} µs/stall with it, committed per batch of {BATCH_EVENTS} ({jour / bare:.1f}x); "
          f"{rising:.1f} µs/stall when every stall is its group's new worst ({rising / bare:.1f}x); "
          f"{one:.1f} µs/stall committed one by one ({one / bare:.1f}x); closing every group: "
          f"{bare_close:.1f} ms without, {jour_close:.1f} ms with")


if __name__ == "__main__":
    main()
