"""Pipeline throughput: 100,000 recorded stalls through `lgf replay --journal`, next to merely
decoding the same file (the floor any replay pays), and lgf's memory next to the decoder's.

The recording: 100,000 stalls of 60 ms from 50 processes, each with an 8-frame stack of raw PCs
(the binaries are not on this host: the stalls are judged as cut stacks, as a recording replayed
elsewhere is). The config: the waitreason classifier and a JSON-lines file sink, and nothing
else, so the alert policy is the default one (``[lgf] env = "prod"``, threshold 50 ms,
report_interval 10 s: every stall enters an open alert group) and ``--journal`` keeps those
groups in the alert journal as ``lgf run`` does. The bench checks both from what lgf says and
writes: the journal reports a row for every stall, the file holds every stall and the alerts the
policy made of them.

Each figure is the best of five runs, interleaved (the machine is shared: the minimum is the
least noisy). Both sides are whole processes timed from outside, start-up included: ``lgf
replay`` (Python's modules compiled once beforehand, as an installed package has them) and a
process that only decodes the file with ``lgf.event.read_events``, which also gives the baseline
of the memory figure (its max RSS). The decoding loop alone, timed inside its process, is printed
too, with the ratio against it, which charges lgf's start-up to lgf alone (the ratio this bench
printed before 2026-12-04). The same ratios in CPU time (user + system, from wait4; the loop's
process time) are printed beside them: other jobs on a shared machine move them less than wall
time.

Then, in process, the per-event hook dispatch lgf uses (pluggy, with each implementation guarded:
lgf.hookcall) next to a direct loop over the same implementations. Run with `make bench` (or
`.venv/bin/python bench/bench_pipeline.py`).
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lgf import config as cfg
from lgf.event import Event, write_events

N = 100_000
RUNS = 5
REASONS = ["chan receive", "chan send", "select", "sync.Mutex.Lock", "IO wait", "sleep", "semacquire"]

DECODE = """
import sys, time
from lgf.event import read_events
t0, c0 = time.perf_counter(), time.process_time()
n = sum(1 for _ in read_events(sys.argv[1]))
print(n, time.perf_counter() - t0, time.process_time() - c0)
"""


def make_recording(path: Path) -> None:
    rnd = random.Random(1)
    events = (Event(pid=1000 + i % 50, tid=2000 + i % 7, comm=f"svc{i % 50}", exe=f"/srv/svc{i % 50}",
                    goid=i, go_version="go1.25.5", start_ns=i * 1000, end_ns=i * 1000 + 60_000_000,
                    wait_reason=rnd.choice(REASONS), pcs=[0x401000 + rnd.randrange(4096) for _ in range(8)],
                    extra={"stall": "park"})
              for i in range(N))
    write_events(path, events)


def run(cmd: list[str], env: dict | None = None) -> tuple[float, float, str, str, float]:
    """(wall seconds, max RSS in MiB, stdout, stderr, CPU seconds) of ``cmd``; exits on failure. The output
    goes through files so that the child is reaped here, by wait4, which gives its own RSS."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd[:4])} failed: {stderr}")
    return seconds, usage.ru_maxrss / 1024, stdout, stderr, usage.ru_utime + usage.ru_stime


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rec = tmp / "rec.msgpack"
        make_recording(rec)
        text = (f'[lgf]\nspool_dir = "{tmp}/spool"\n[[classifiers]]\nuse = "waitreason"\n'
                f'[[sinks]]\nuse = "file"\npath = "{tmp}/out.jsonl"\nreceive = "both"\n')
        config = tmp / "c.toml"
        config.write_text(text)
        host = cfg.validate({"lgf": {"spool_dir": str(tmp / "spool")}}, {}).host
        sections = [line for line in text.splitlines() if line.startswith("[")]
        assert sections == ["[lgf]", "[[classifiers]]", "[[sinks]]"], sections  # no [alerts], [environments]...

        # Python's compiled modules in a cache of this run, written by a first lgf process (a
        # replay of one stall): a shell with PYTHONDONTWRITEBYTECODE set (the one this was measured
        # in is) had every timed process compile lgf's 170 modules again (0.13 s of each replay),
        # which an installed lgf never does. The second such replay gives lgf's start-up.
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
        one = [sys.executable, "-m", "lgf.cli", "replay", str(empty_recording(tmp)), "--config", str(config),
               "--journal"]
        run(one, env)
        for f in tmp.glob("spool/*"):  # a fresh spool_dir: nothing to recover
            f.unlink()
        startup_s, startup_rss, _, _, _ = run(one, env)
        best = {"decode": (float("inf"), 0.0), "replay": (float("inf"), 0.0)}
        cpu = {"decode": float("inf"), "replay": float("inf"), "loop": float("inf")}
        loop_s = float("inf")
        said = ""
        for _ in range(RUNS):
            seconds, rss, out, _, cpu_seconds = run([sys.executable, "-c", DECODE, str(rec)], env)
            n, in_loop, in_loop_cpu = out.split()
            assert int(n) == N, out
            best["decode"] = min(best["decode"], (seconds, rss))
            cpu["decode"] = min(cpu["decode"], cpu_seconds)
            loop_s, cpu["loop"] = min(loop_s, float(in_loop)), min(cpu["loop"], float(in_loop_cpu))
            for f in [*tmp.glob("out.jsonl*"), *tmp.glob("spool/*")]:
                f.unlink()
            seconds, rss, _, err, cpu_seconds = run([sys.executable, "-m", "lgf.cli", "replay", str(rec),
                                                     "--config", str(config), "--journal"], env)
            best["replay"] = min(best["replay"], (seconds, rss))
            cpu["replay"] = min(cpu["replay"], cpu_seconds)
            said = err
            stalls, alerts = count_written(tmp)
            if stalls != N or not alerts:
                sys.exit(f"replay wrote {stalls} of {N} stalls and {alerts} alert(s)")
            journaled = re.search(r"alert journal \S+: (\d+) stall\(s\) written", err)
            if journaled is None or int(journaled[1]) != N:
                sys.exit(f"the alert journal did not take every stall: {err}")

        decode_s, decode_rss = best["decode"]
        replay_s, replay_rss = best["replay"]
        print(f"pipeline: {N:,} recorded stalls (50 processes, 8-frame stacks), msgpack recording -> "
              f"`lgf replay --journal`: waitreason classifier, default alert policy (env {host.env}, "
              f"threshold {host.threshold / 1e6:.0f} ms, report_interval {host.report_interval / 1e9:.0f} s), "
              f"alert journal on, JSON-lines file sink")
        print(f"  lgf said: {said.strip().splitlines()[-1]}")
        print(f"  file sink: {stalls:,} stalls and {alerts} alerts")
        print(f"  decode only (baseline)        : {N / decode_s:>10,.0f} events/s  ({decode_s:.2f} s, "
              f"start-up included)")
        print(f"  lgf replay --journal          : {N / replay_s:>10,.0f} events/s  ({replay_s:.2f} s, "
              f"start-up included)")
        print(f"  ratio replay/decode           : {decode_s / replay_s:.3f} (1.0 = as fast as decoding; "
              f"CPU time {cpu['decode']:.2f} s / {cpu['replay']:.2f} s, ratio {cpu['decode'] / cpu['replay']:.3f})")
        print(f"  of which lgf's start-up       : {startup_s:.2f} s (a replay of 1 stall, run once)")
        print(f"  the decoding loop alone       : {N / loop_s:>10,.0f} events/s  ({loop_s:.2f} s); ratio "
              f"replay/loop {loop_s / replay_s:.3f} (CPU time {cpu['loop'] / cpu['replay']:.3f}): lgf's start-up "
              f"counted on its side only")
        print(f"  max RSS, decoding (baseline)  : {decode_rss:7.1f} MiB")
        print(f"  max RSS, lgf replay of 1 stall: {startup_rss:7.1f} MiB  (ratio {startup_rss / decode_rss:.2f})")
        print(f"  max RSS, lgf replay of {N:,}: {replay_rss:7.1f} MiB  (ratio {replay_rss / decode_rss:.2f})")


def empty_recording(tmp: Path) -> Path:
    path = tmp / "one.msgpack"
    write_events(path, [Event(pid=1, comm="one", goid=1, start_ns=0, end_ns=60_000_000, extra={"stall": "park"})])
    return path


def count_written(tmp: Path) -> tuple[int, int]:
    """Stalls and alerts in the file sink's files (it rotates at 64 MiB: the rotated ones too)."""
    kinds = {"stall": 0, "alert": 0}
    for f in tmp.glob("out.jsonl*"):
        with open(f) as fh:
            for line in fh:
                kinds[json.loads(line)["kind"]] += 1
    return kinds["stall"], kinds["alert"]


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
