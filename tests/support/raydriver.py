"""One lgf instance for tests/test_ray_shared.py: a symbolizer enricher attached to a Ray cluster.

Run as its own process (each a Ray driver of its own, as lgf on another host would be):
``python -m support.raydriver ADDRESS BINARY``. Reads one JSON command per line on stdin, answers
one JSON line on stdout; lgf's log goes to stderr.

- ``{"op": "sym", "pcs": [...]}`` -> ``{"funcs": [[func, ...] per PC], "backend": "ray"|"local",
  "lost": n}``: the event's stack as the enricher filled it (PCs are return addresses);
- ``{"op": "info"}`` -> the build's shared actor's counters and every named actor of the cluster;
- ``{"op": "quit"}``.
"""

from __future__ import annotations

import json
import logging
import sys


def main() -> int:
    address, binary = sys.argv[1], sys.argv[2]
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(name)s: %(message)s")
    from lgf import Event, RunContext
    from lgf.plugins.symbolizer import SymbolizerEnricher, SymbolizerOptions
    from lgf.services import Services
    from lgf.stats import Stats

    stats = Stats()
    enricher = SymbolizerEnricher(SymbolizerOptions(backend="ray", ray_address=address),
                                  RunContext(config=None, stats=stats, services=Services()))
    print(json.dumps({"ready": enricher.backend.name}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "quit":
            break
        if cmd["op"] == "sym":
            ev = Event(exe=binary, pcs=cmd["pcs"])  # one event, its stack's frames keyed by PC
            enricher.lgf_enrich(ev)
            by_pc: dict[int, list[str]] = {pc: [] for pc in cmd["pcs"]}
            for f in ev.stack:
                by_pc[f["pc"]].append(f["func"])
            funcs = [by_pc[pc] for pc in cmd["pcs"]]
            out = {"funcs": funcs, "backend": enricher.backend.name,
                   "lost": stats.get("lgf_symbolizer_failures_total", reason="ray_lost")}
        elif cmd["op"] == "info":
            import ray

            backend = enricher.backend
            out = {"actor": backend.info(backend.build_id(binary)),
                   "named": ray.util.list_named_actors(all_namespaces=True)}
        print(json.dumps(out), flush=True)
    enricher.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
