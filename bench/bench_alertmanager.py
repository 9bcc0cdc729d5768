"""What the Alertmanager sink and the relay cost, each beside a baseline from the same run.

    .venv/bin/python bench/bench_alertmanager.py [N]

Needs Debian's ``prometheus-alertmanager`` (started here on a free loopback port, clustering off).

1. The sink's cost per alert: ``AlertmanagerSink.send_batch`` of one alert (labels, annotations,
   the firing set written to disk, one POST to a real Alertmanager on loopback), against the
   file sink appending the same alert as a JSON line (``flush = "event"``).
2. The same with 100 alerts per batch (what the durable queue hands over after a burst).
3. Relay latency: ``POST /api/alertmanager`` of one notification to a relay (``lgf.run.Host``
   in this process, its HTTP server on loopback, a WeCom sink posting to the fake robot) until
   the robot has the message: the relay's share of an incident's path to WeCom (Alertmanager's
   own ``group_wait`` comes on top and is configuration).

No assertion on speed: the figures are printed for a human to compare.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from lgf import Event  # noqa: E402
from lgf.context import RunContext  # noqa: E402
from lgf.sinks.alertmanager import AlertmanagerOptions, AlertmanagerSink  # noqa: E402
from lgf.sinks.file import FileOptions, FileSink  # noqa: E402
from lgf.stats import Stats  # noqa: E402
from support.alertmanager import Alertmanager, free_port  # noqa: E402
from support.fakewecom import FakeWeCom  # noqa: E402


def alert(i: int) -> Event:
    return Event(kind="alert", pid=4000 + i, comm="api", cause=("lock", "channel")[i % 2], severity="warning",
                 duration_ns=2 * 10**8, env="prod", tags={"team": "payments"}, topology={"host": f"node-{i % 7}"},
                 stack_summary=["main.handler", "sync.(*Mutex).Lock"], trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
                 extra={"service": f"svc-{i % 40}", "count": 3, "worst_ns": 2 * 10**8, "summary": "svc: 3 lock stall(s)"})


def per_item(fn, items, batch: int = 1) -> float:
    t0 = time.perf_counter()
    for k in range(0, len(items), batch):
        fn(items[k:k + batch])
    return (time.perf_counter() - t0) / len(items) * 1e6


def main(n: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="lgf-bench-am-"))
    am = Alertmanager(tmp / "am").start()
    try:
        ctx = RunContext(config=None, stats=Stats(), name="am")
        sink = AlertmanagerSink(AlertmanagerOptions(url=am.url), ctx)
        sink.state_path = tmp / "am.alertmanager.json"
        fsink = FileSink(FileOptions(path=str(tmp / "alerts.jsonl")), ctx)
        items = [alert(i) for i in range(n)]
        sink.send_batch(items[:10])  # warm the connection path and Alertmanager
        for round_ in range(3):
            am_us = per_item(sink.send_batch, items)
            file_us = per_item(lambda b: fsink.send(b[0]), items)
            am100_us = per_item(sink.send_batch, items, 100)
            print(f"round {round_ + 1}: alertmanager sink {am_us:8.0f} us/alert (1 per POST), "
                  f"{am100_us:6.0f} us/alert (100 per POST); file sink {file_us:6.1f} us/alert; "
                  f"ratio {am_us / file_us:.0f}x")
        sink.close()
        fsink.close()
    finally:
        am.stop()
    relay_latency(tmp, max(20, n // 50))


def relay_latency(tmp: Path, n: int) -> None:
    from lgf.loading import load
    from lgf.run import Host

    key = "bench-key"
    os.environ["LGF_WECOM_KEY"] = key
    os.environ["LGF_TOKEN_OPERATOR_BENCH"] = token = "bench-token-0123456789"
    fake = FakeWeCom(keys=(key,), per_minute=10**6).start()
    port = free_port()
    cfg = tmp / "relay.toml"
    cfg.write_text(f'[lgf]\nspool_dir = "{tmp / "relay"}"\n[http]\nlisten = "127.0.0.1:{port}"\n'
                   f'[[sinks]]\nuse = "wecom"\nurl = "{fake.url}"\nper_minute = 1000000\n')
    manager, config = load(str(cfg))
    host = Host(manager, config)
    host.build()
    runner = threading.Thread(target=host.run, daemon=True)
    # Host.run installs signal handlers: only the main thread may; run it here on the main thread
    # instead and drive the posts from a thread.
    times: list[float] = []

    def drive():
        time.sleep(1.0)
        for i in range(n):
            body = json.dumps({"status": "firing", "groupKey": f"g{i}", "receiver": "lgf-relay", "alerts": [
                {"status": "firing", "fingerprint": f"f{i}-{h}", "startsAt": "2026-12-03T10:00:00Z",
                 "labels": {"alertname": "LgfStall", "service": "checkout", "cause": "lock", "host": f"node-{h}",
                            "severity": "warning"},
                 "annotations": {"summary": "checkout: 3 lock stall(s)", "worst_ns": "200000000"}}
                for h in range(3)]}).encode()
            before = len(fake.accepted())
            req = urllib.request.Request(f"http://127.0.0.1:{port}/api/alertmanager", data=body, method="POST",
                                         headers={"Authorization": f"Bearer {token}"})
            t0 = time.perf_counter()
            urllib.request.urlopen(req, timeout=10).read()
            while len(fake.accepted()) <= before:
                time.sleep(0.0005)
            times.append((time.perf_counter() - t0) * 1e3)
        host.stopping.set()

    driver = threading.Thread(target=drive, daemon=True)
    driver.start()
    del runner
    host.run()
    driver.join()
    fake.stop()
    times.sort()
    print(f"relay: POST /api/alertmanager to the message at the robot, {len(times)} notifications of 3 hosts: "
          f"median {statistics.median(times):.1f} ms, p90 {times[int(len(times) * 0.9) - 1]:.1f} ms, "
          f"max {times[-1]:.1f} ms")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
