"""Pipeline throughput: 100k recorded events through `lgf replay` -> classifier -> file sink,
next to merely decoding the same file (the floor any replay pays).

Prints events/s for both and the ratio. Run with `make bench` (or `.venv/bin/python bench/bench_pipeline.py`).
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
        written = sum(1 for _ in open(tmp / "out.jsonl"))
        print(f"pipeline: {N} events, msgpack recording, waitreason classifier, jsonl file sink")
        print(f"  decode only          : {decoded / decode_s:>10,.0f} events/s  ({decode_s:.2f} s)")
        print(f"  lgf replay (process) : {written / replay_s:>10,.0f} events/s  ({replay_s:.2f} s, "
              f"start-up included)")
        print(f"  ratio replay/decode  : {decode_s / replay_s:.3f} (1.0 = as fast as decoding)")


if __name__ == "__main__":
    main()
