"""What the ``peer`` enricher costs lgf per stall: the sampler's capture while the goroutine is
parked, and the enricher's look-up of the process at the other end.

Run as root: ``.venv/bin/python bench/bench_peer.py``. tests/goapps/revproxy proxies to
tests/goapps/slowupstream (made to answer after 30 s here, so the handler stays parked while
it is measured); the goroutine of one request held in ``net/http.(*persistConn).roundTrip`` is
found and its stack walked once, then, ``N`` times each, medians:

- ``find_request`` (the baseline): what the sampler's park judge already does for every stall
  that serves a request (:mod:`lgf.golang.httpserve`);
- ``capture``: :meth:`lgf.golang.peercapture.PeerCapture.capture` on the same goroutine (upstream
  from the frames, the connection's two ends, the caller), the part paid on the sampler's thread;
- ``enrich``: the enricher's part for the same facts with the owners cached (the socket tables,
  one ``readlink`` per end), and ``owner scan``: one owner look-up not in the cache (every
  process's descriptor links).

The target pays nothing: all of it is lgf reading from outside. Each figure is printed with its
ratio to ``find_request``, measured in the same run.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from lgf.golang import goroutine_stack, httpserve  # noqa: E402
from lgf.golang.netpeer import SocketOwners, peer_sockets, tcp_table  # noqa: E402
from lgf.golang.peercapture import PeerCapture  # noqa: E402
from lgf.golang.runtime_reader import RuntimeReader, allg_pointers, read_g_fields  # noqa: E402
from lgf.plugins.peer import PeerEnricher  # noqa: E402
from support.gobuild import GOAPPS, build_go  # noqa: E402

GO = os.environ.get("LGF_BENCH_GO", "1.25.5")
N = int(os.environ.get("LGF_BENCH_N", "200"))


def median_us(fn, n: int = N) -> float:
    times = []
    for _ in range(n):
        t = time.thread_time_ns()  # lgf's CPU (user + system), not wall time on a shared host
        fn()
        times.append(time.thread_time_ns() - t)
    return statistics.median(times) / 1000


def parked(reader, goid: int):
    b = reader.binary
    sched, stk = b.field_offset("g", "sched"), b.field_offset("g", "stack")
    names = {"goid": b.field_offset("g", "goid"), "hi": stk + b.field_offset("stack", "hi"),
             "pc": sched + b.field_offset("gobuf", "pc"), "sp": sched + b.field_offset("gobuf", "sp"),
             "bp": sched + b.field_offset("gobuf", "bp")}
    order = sorted(names, key=names.get)
    for row in read_g_fields(reader, allg_pointers(reader, 100_000), [(names[n], "Q") for n in order]):
        g = dict(zip(order, row[1:], strict=True))
        if g["goid"] == goid:
            bounds: list = []
            pcs, _ = goroutine_stack.walk(reader, g["pc"], g["bp"], g["sp"], g["hi"], bounds=bounds)
            return row[0], pcs, bounds, (g["sp"], g["hi"])
    raise SystemExit(f"goroutine {goid} not found")


def main() -> None:
    up = subprocess.Popen([str(build_go(GOAPPS / "slowupstream", GO)), "-delay", "30s"], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True)
    uh = json.loads(up.stdout.readline())
    px = subprocess.Popen([str(build_go(GOAPPS / "revproxy", GO)), "-upstream", uh["http"], "-slowtcp", uh["tcp"]],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    addr = json.loads(px.stdout.readline())["addr"]
    def request():
        try:
            urllib.request.urlopen(f"http://{addr}/proxy/bench", timeout=60).read()
        except OSError:
            pass  # the proxy is killed before it answers
    threading.Thread(target=request, daemon=True).start()
    said = json.loads(px.stdout.readline())
    time.sleep(0.3)
    try:
        reader = RuntimeReader(px.pid)
        b = reader.binary
        g, pcs, bounds, stack = parked(reader, said["goid"])
        req = httpserve.find_request(reader, b, pcs, bounds, stack)
        capture = PeerCapture()
        facts = capture.capture(reader, b, g, "select", pcs, bounds, stack, req.response)
        assert facts.get("waited_on", {}).get("addr") == uh["http"], facts
        enricher = PeerEnricher.__new__(PeerEnricher)
        enricher.options, enricher.stats, enricher.owners = PeerEnricher.Options(), None, SocketOwners()

        def enrich():
            for key in ("waited_on", "caller"):
                enricher._described(dict(facts[key]), px.pid)

        base = median_us(lambda: httpserve.find_request(reader, b, pcs, bounds, stack))
        cap = median_us(lambda: capture.capture(reader, b, g, "select", pcs, bounds, stack, req.response))
        enrich()  # the owners into the cache
        enr = median_us(enrich, max(N // 4, 10))
        scan = median_us(lambda: SocketOwners()._scan(1), 10)
        ends = facts["waited_on"]["local"], facts["waited_on"]["peer"]
        diag = median_us(lambda: peer_sockets(px.pid, *ends), max(N // 4, 10))
        table = median_us(lambda: tcp_table(px.pid), 10)
        print(f"revproxy go{GO}, median of {N} (owner scan: 10), lgf's CPU per stall:")
        print(f"  find_request (baseline)     {base:9.1f} us  x1.00")
        print(f"  capture (sampler thread)    {cap:9.1f} us  x{cap / base:.2f}")
        print(f"  enrich, owners cached       {enr:9.1f} us  x{enr / base:.2f}")
        print(f"    other end, sock_diag      {diag:9.1f} us  x{diag / base:.2f}  (per end)")
        print(f"    other end, /proc tables   {table:9.1f} us  x{table / base:.2f}  (the fallback)")
        print(f"  owner scan, not cached      {scan:9.1f} us  x{scan / base:.2f}  "
              f"({len([p for p in os.listdir('/proc') if p.isdigit()])} processes)")
    finally:
        for p in (px, up):
            p.stdin.close()
            p.kill()
            p.wait()


if __name__ == "__main__":
    main()
