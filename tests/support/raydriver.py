"""One lgf instance for tests/test_ray_shared.py: a symbolizer enricher attached to a Ray cluster.

Run as its own process (each a Ray driver of its own, as lgf on another host would be):
``python -m support.raydriver ADDRESS BINARY [IDLE_EXIT]`` (ADDRESS ``-``: the local backend;
IDLE_EXIT: the enricher's ``actor_idle_exit``, e.g. ``"3s"``). Reads one JSON command per line on stdin, answers
one JSON line on stdout; lgf's log goes to stderr.

- ``{"op": "sym", "pcs": [...]}`` -> ``{"funcs": [[func, ...] per PC], "backend": "ray"|"local",
  "lost": n, "seconds": s}``: the event's stack as the enricher filled it (PCs are return
  addresses), and how long the enricher took;
- ``{"op": "info"}`` -> the build's shared actor's counters and every named actor of the cluster;
- ``{"op": "forget"}`` -> ``{}``: the shared backend's driver-side frame cache emptied (bench);
- ``{"op": "reload"}`` -> ``{"ready": backend}``: a new enricher, the old one left unclosed (as a
  reload swapping the table leaves it), used from then on;
- ``{"op": "named"}`` -> every named actor of the cluster (the build's actor not touched);
- ``{"op": "quit"}``.
"""

from __future__ import annotations

import json
import logging
import sys
import time


def main() -> int:
    address, binary = sys.argv[1], sys.argv[2]
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(name)s: %(message)s")
    from lgf import Event, RunContext
    from lgf.options import parse_duration
    from lgf.plugins.symbolizer import SymbolizerEnricher, SymbolizerOptions
    from lgf.services import Services
    from lgf.stats import Stats

    stats = Stats()
    options = (SymbolizerOptions() if address == "-" else
               SymbolizerOptions(backend="ray", ray_address=address,
                                 **({"actor_idle_exit": parse_duration(sys.argv[3])} if len(sys.argv) > 3 else {})))
    ctx = RunContext(config=None, stats=stats, services=Services())
    enricher = SymbolizerEnricher(options, ctx)
    print(json.dumps({"ready": enricher.backend.name}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "quit":
            break
        if cmd["op"] == "sym":
            ev = Event(exe=binary, pcs=cmd["pcs"])  # one event, its stack's frames keyed by PC
            t0 = time.perf_counter()
            enricher.lgf_enrich(ev)
            seconds = time.perf_counter() - t0
            by_pc: dict[int, list[str]] = {pc: [] for pc in cmd["pcs"]}
            for f in ev.stack:
                by_pc[f["pc"]].append(f["func"])
            funcs = [by_pc[pc] for pc in cmd["pcs"]]
            out = {"funcs": funcs, "backend": enricher.backend.name,
                   "lost": stats.get("lgf_symbolizer_failures_total", reason="ray_lost"), "seconds": seconds}
        elif cmd["op"] == "info":
            import ray

            backend = enricher.backend
            out = {"actor": backend.info(backend.build_id(binary)),
                   "named": ray.util.list_named_actors(all_namespaces=True)}
        elif cmd["op"] == "reload":
            enricher = SymbolizerEnricher(options, ctx)
            out = {"ready": enricher.backend.name}
        elif cmd["op"] == "forget":
            enricher.backend._cache.clear()
            out = {}
        elif cmd["op"] == "named":
            import ray

            out = {"named": ray.util.list_named_actors(all_namespaces=True)}
        print(json.dumps(out), flush=True)
    enricher.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
