"""What reading the stalled request's trace context costs: a net/http server under wrk, traced by
`lgf run` with the shipped plugins.toml, with and without the ``trace_context`` enricher.

Run as root: ``.venv/bin/python bench/bench_trace_context.py``. The server is
tests/goapps/tracehttp: every request runs its handler under pprof labels (``pprof.Do``), as a
service using a tracing library's profiling bridge would. Configurations, measured in interleaved
rounds (median per configuration; the host is shared):

- ``off``: lgf not running (the baseline);
- ``shipped, no trace_context``: the shipped plugins.toml without its ``trace_context`` table;
- ``shipped``: the shipped plugins.toml as it is.

Two workloads: ``healthy`` (wrk on a handler that does not stall: nothing is reported, so the
feature must cost exactly nothing), and ``stalling`` (the same, plus one request every 200 ms that
stalls 150 ms on a channel with a traceparent header: the goroutine tier is armed, and every stall
is enriched). Figure: the server's CPU per request (utime + stime from /proc).

Last, what one enriched stall costs lgf itself: ``lgf_enrich`` of the trace_context enricher on an
event carrying the labels pointer and the request address of a handler held in /hold (labels,
then the request's Traceparent header, from the live process), beside one bare
``process_vm_readv`` of 8 bytes (the floor of any read).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from test_e2e_uprobe import LgfRun  # noqa: E402

from support.gobuild import build_go  # noqa: E402
from support.tracehttp import TRACEHTTP, TRACEPARENT  # noqa: E402

GO = os.environ.get("LGF_BENCH_GO", "1.25.5")
WRK_SECONDS = int(os.environ.get("LGF_BENCH_WRK_SECONDS", "3"))
ROUNDS = int(os.environ.get("LGF_BENCH_ROUNDS", "3"))
TRACE_TABLE = re.compile(r'\[\[enrichers\]\]\nuse = "trace_context"[^\n]*\n')


def config_text(pid: int, spool: str, events: str, trace_context: bool) -> str:
    """The shipped plugins.toml, aimed at one pid, with its spool and events in a temporary dir."""
    text = (ROOT / "plugins.toml").read_text()
    assert TRACE_TABLE.search(text), "the shipped plugins.toml has no trace_context table"
    if not trace_context:
        text = TRACE_TABLE.sub("", text)
    text = re.sub(r"(?m)^all = true.*$", f"pids = [{pid}]", text)
    text = re.sub(r'(?m)^spool_dir = .*$', f'spool_dir = "{spool}"', text)
    text = re.sub(r'(?m)^use = "stdout"\n', f'use = "file"\npath = "{events}"\n', text)
    return re.sub(r"(?m)^\[http\]\n", "[http]\nenabled = false\n", text)


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def stall_requests(addr: str, stop: threading.Event) -> None:
    host, port = addr.rsplit(":", 1)
    while not stop.wait(0.2):
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            conn.request("GET", "/order?stall=chan&ms=150", headers={"traceparent": TRACEPARENT})
            conn.getresponse().read()
        except OSError:
            pass
        finally:
            conn.close()


def measure(exe: Path, config: str | None, stalling: bool) -> tuple[float, int, int]:
    """(server CPU us per request, stalls reported, of them with a trace id)."""
    proc = subprocess.Popen([str(exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    hello = json.loads(proc.stdout.readline())
    tmp = tempfile.TemporaryDirectory()
    events = Path(tmp.name) / "events.jsonl"
    run = None
    stop = threading.Event()
    try:
        if config is not None:
            cfg = Path(tmp.name) / "plugins.toml"
            cfg.write_text(config_text(proc.pid, tmp.name, str(events), config == "shipped"))
            run = LgfRun(cfg)
            run.wait_log(f"tracing pid {proc.pid}")
        url = f"http://{hello['addr']}/order?stall=none"
        subprocess.run(["wrk", "-t1", "-c4", "-d1s", url], capture_output=True, check=True)  # warm-up
        stalls = threading.Thread(target=stall_requests, args=(hello["addr"], stop), daemon=True)
        if stalling:
            stalls.start()
        before = cpu_ticks(proc.pid)
        out = subprocess.run(["wrk", "-t2", "-c16", f"-d{WRK_SECONDS}s", url], capture_output=True,
                             text=True, check=True).stdout
        used = cpu_ticks(proc.pid) - before
        stop.set()
        if stalling:
            stalls.join(timeout=15)
        requests = int(re.search(r"(\d+) requests in", out).group(1))
        hz = os.sysconf("SC_CLK_TCK")
        rows = []
        if run is not None:
            time.sleep(0.5)
            rows = [json.loads(ln) for ln in events.read_text().splitlines() if ln.strip()] if events.exists() else []
        reported = [r for r in rows if r.get("kind") == "stall"]
        traced = sum(1 for r in reported if r.get("trace_id"))
        return used / hz * 1e6 / requests, len(reported), traced
    finally:
        stop.set()
        if run is not None:
            run.stop()
        proc.stdin.close()
        proc.wait()
        tmp.cleanup()


def main() -> int:
    if os.geteuid() != 0:
        print("bench_trace_context: needs root (BPF)", file=sys.stderr)
        return 1
    exe = build_go(TRACEHTTP, GO)
    configs = {"off": None, "shipped, no trace_context": "no_trace_context", "shipped": "shipped"}
    print(f"trace_context cost, Go {GO}, {os.cpu_count()} CPUs; net/http (pprof.Do handler) under wrk "
          f"-t2 -c16 -d{WRK_SECONDS}s; median of {ROUNDS} interleaved rounds; ratios against this run's rows")
    for stalling in (False, True):
        runs = {name: [] for name in configs}
        for _ in range(ROUNDS):
            for name, config in configs.items():
                runs[name].append(measure(exe, config, stalling))
        print(f"\n{'stalling (one 150 ms stall every 200 ms, traceparent)' if stalling else 'healthy (no stall)'}:")
        base = statistics.median(r[0] for r in runs["off"])
        without = statistics.median(r[0] for r in runs["shipped, no trace_context"])
        for name, rs in runs.items():
            us = statistics.median(r[0] for r in rs)
            line = f"  {name:28s} {us:7.2f} us/req  {100 * (us / base - 1):+6.1f} % vs off"
            if name != "off":
                line += (f"  {100 * (us / without - 1):+6.1f} % vs no trace_context"
                         f"   {sum(r[1] for r in rs)} stalls reported ({sum(r[2] for r in rs)} with a trace id)")
            print(line)
    per_stall, bare = enrich_cost(exe)
    print(f"\nlgf's side, one enriched stall (labels + traceparent, Go {GO}): {per_stall:7.1f} us "
          f"(one bare 8-byte process_vm_readv: {bare:5.1f} us, {per_stall / bare:5.1f}x)")
    return 0


def enrich_cost(exe: Path, n: int = 200) -> tuple[float, float]:
    """(us of lgf CPU per ``lgf_enrich`` of one stall event, us per bare 8-byte read)."""
    import types

    from test_gomap import _labels_ptr_of

    from lgf.event import Event
    from lgf.golang.runtime_reader import RuntimeReader
    from lgf.plugins.trace_context import TraceContextEnricher, TraceContextOptions
    from lgf.services import Services
    from lgf.stats import Stats
    from support.tracehttp import TraceHTTP

    with TraceHTTP(exe) as app:
        line, t = app.hold({"traceparent": TRACEPARENT})
        try:
            reader = RuntimeReader(app.pid)
            labels = _labels_ptr_of(reader, line["goid"])
            enricher = TraceContextEnricher(TraceContextOptions(), types.SimpleNamespace(stats=Stats(), sources=[], services=Services()))
            events = [Event(pid=app.pid, goid=line["goid"], end_ns=time.monotonic_ns(),
                            extra={"pprof_labels_addr": labels, "http_request_addr": int(line["req"], 16)})
                      for _ in range(n)]
            enricher.lgf_enrich(events[0])  # the reader is made once per process
            assert events[0].trace_id and events[0].labels, "the bench's stall was not enriched"
            c0 = time.process_time()
            for ev in events[1:]:
                enricher.lgf_enrich(ev)
            per_stall = (time.process_time() - c0) / (n - 1) * 1e6
            c0 = time.process_time()
            for _ in range(n):
                reader.read(labels, 8)
            bare = (time.process_time() - c0) / n * 1e6
            reader.close()
        finally:
            app.release()
            t.join(timeout=10)
    return per_stall, bare


if __name__ == "__main__":
    sys.exit(main())
