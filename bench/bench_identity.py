"""Cost of a process's identity on every stall, with and without Kubernetes' pods, same run.

1. ``ProcessIdentities.apply(event)`` for a process already read (the per-stall cost: a cache
   look-up and the copy of its keys onto the event), next to the same with ``[kubernetes]``'s pod
   cache (``lgf.kubernetes.Pods``, filled from a local server serving API-server JSON) adding the
   pod's name, namespace, owner, labels and tags. Baseline: without pods.
2. Reading one process's identity from /proc (once per process), next to reading its
   /proc/PID/stat alone (the floor of any per-process /proc read).

Run: ``.venv/bin/python bench/bench_identity.py`` (or ``make bench``). No assertions on speed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from benchlib import best_of  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from lgf.event import Event  # noqa: E402
from lgf.identity import Identity, ProcessIdentities, read_identity, start_time_of  # noqa: E402
from lgf.kubernetes import KubeletPods, Pods  # noqa: E402
from support.fakekube import FakeKube  # noqa: E402

UID = "7c5b2f0e-3a1d-4c6b-9e8f-0123456789ab"
CID = "4a1f0c9e2b3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7"
N = 20_000
PID = os.getpid()


def per_event(ids: ProcessIdentities) -> float:
    ids._cache[PID] = (start_time_of(PID), 0, Identity(ns_pid=1, container_id=CID, pod_uid=UID,
                                                       otel_service="checkout-api"))
    ids.clock = lambda: 1  # always fresh: the per-stall path, not the once-a-second recheck

    def run():
        for _ in range(N):
            ids.apply(Event(pid=PID, comm="app"))
    return best_of(3, run) / N


def main() -> None:
    with FakeKube(UID, CID) as server:
        pods = Pods(kubelet=KubeletPods(server.url + "/pods"), node="node-a")
        pods.pod(UID)  # read the list once
        bare = per_event(ProcessIdentities())
        with_pods = per_event(ProcessIdentities(pods=pods))
    print(f"1. identity onto one stall event (best of 3, {N} events)")
    print(f"   without pods {bare * 1e6:6.2f} us   with [kubernetes] pods {with_pods * 1e6:6.2f} us   "
          f"ratio {with_pods / bare:5.2f}")
    read = best_of(5, lambda: read_identity(PID))
    floor = best_of(5, lambda: start_time_of(PID))
    print("2. reading one process's identity from /proc (once per process; best of 5)")
    print(f"   read_identity {read * 1e3:6.3f} ms   /proc/PID/stat alone {floor * 1e3:6.3f} ms   "
          f"ratio {read / floor:6.1f}")


if __name__ == "__main__":
    main()
