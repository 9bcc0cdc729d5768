"""Pipeline throughput: 100k recorded events through `lgf replay` -> classifier -> file sink,
next to merely decoding the same file (the floor any replay pays).

Prints events/s for both and the ratio. Then, in process, the per-event hook dispatch lgf uses
(pluggy, with each implementation guarded: lgf.hookcall) next to a direct loop over the same
implementations (how lgf called them before the hooks went through pluggy): the price of tracing,
wrappers and one code path. Run with `make bench` (or `.venv/bin/python bench/bench_pipeline.py`).
"""

from __future__ import annotations

import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lgf.event import Event, read_events, write_events

N = 100_000
REASONS = ["chan receive", "chan send", "select", "sync.Mutex.Lock", "IO wait", "sleep", "semacquire"]


def make_recording(path: Path) -> None:
    rnd = random.Random(1)
    events = (Event(pid=1000 + i % 50, tid=2000 + i % 7, comm=f"svc{i % 50}", exe=f"/srv/svc{i % 50}",
                    goid=i, go_version="go1.25.5", start_ns=i * 1000, end_ns=i * 1000 + 60_000_000,
                    wait_reason=rnd.choice(REASONS), pcs=[0x401000 + rnd.randrange(4096) for _ in range(8)],
                    extra={"stall": "park"})
              for i in range(N))
    write_events(path, events)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rec = tmp / "rec.msgpack"
        make_recording(rec)
        t0 = time.perf_counter()
        decoded = sum(1 for _ in read_events(rec))
        decode_s = time.perf_counter() - t0
        cfg = tmp / "c.toml"
        cfg.write_text(f'[lgf]\nspool_dir = "{tmp}/spool"\n[[classifiers]]\nuse = "waitreason"\n'
                       f'[[sinks]]\nuse = "file"\npath = "{tmp}/out.jsonl"\nreceive = "events"\n')
        t0 = time.perf_counter()
        res = subprocess.run([sys.executable, "-m", "lgf.cli", "replay", str(rec), "--config", str(cfg)],
                             capture_output=True, text=True)
        replay_s = time.perf_counter() - t0
        if res.returncode != 0:
            sys.exit(f"replay failed: {res.stderr}")
        # The sink rotates at 64 MiB (100k events are ~68 MB): count the rotated files too.
        written = sum(1 for f in tmp.glob("out.jsonl*") for _ in open(f))
        if written != N:
            sys.exit(f"replay wrote {written} of {N} events")
        print(f"pipeline: {N} events, msgpack recording, waitreason classifier, jsonl file sink")
        print(f"  decode only          : {decoded / decode_s:>10,.0f} events/s  ({decode_s:.2f} s)")
        print(f"  lgf replay (process) : {written / replay_s:>10,.0f} events/s  ({replay_s:.2f} s, "
              f"start-up included)")
        print(f"  ratio replay/decode  : {decode_s / replay_s:.3f} (1.0 = as fast as decoding)")


def direct_loop(hook, first_result: bool = False, **kwargs):
    """The baseline: each plain implementation called by hand, failures skipped (no tracing, no
    wrappers: the pre-pluggy ``call_each``)."""
    for impl in reversed(hook.get_hookimpls()):
        if impl.wrapper or impl.hookwrapper:
            continue
        try:
            result = impl.function(*[kwargs[name] for name in impl.argnames])
        except Exception:
            continue
        if first_result and result is not None:
            return result
    return None


def hook_dispatch() -> None:
    from lgf.plugins import waitreason
    from lgf.testing import make_manager

    manager = make_manager()
    manager.register(waitreason.WaitReasonClassifier(None, None), "classifiers[0]", "config")
    hook = manager.pm.hook
    rnd = random.Random(2)
    events = [Event(wait_reason=rnd.choice(REASONS), extra={"stall": "park"}) for _ in range(20_000)]

    def through_pluggy():
        for e in events:
            hook.lgf_enrich(event=e)
            e.cause = hook.lgf_classify(event=e) or "unknown"

    def by_hand():
        for e in events:
            direct_loop(hook.lgf_enrich, event=e)
            e.cause = direct_loop(hook.lgf_classify, first_result=True, event=e) or "unknown"

    best = {"pluggy": float("inf"), "direct": float("inf")}
    for _ in range(5):  # interleaved, best of five: the machine's noise hits both alike
        for name, fn in (("direct", by_hand), ("pluggy", through_pluggy)):
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    per = {k: v / len(events) * 1e6 for k, v in best.items()}
    print("hook dispatch per event (lgf_enrich + lgf_classify, built-in classifiers):")
    print(f"  direct loop (baseline) : {per['direct']:6.2f} us")
    print(f"  pluggy + guards        : {per['pluggy']:6.2f} us  (ratio {per['pluggy'] / per['direct']:.2f})")


if __name__ == "__main__":
    main()
    hook_dispatch()
