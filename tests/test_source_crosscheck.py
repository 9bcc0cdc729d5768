"""Cross-check lgf against Go's own execution tracer (runtime/trace) in the same run.

The fixture traces itself while lgf's uprobe source watches it; ``go tool trace -d=parsed`` (the
toolchain's own parser) then says when the goroutine went Running->Waiting and Waiting->Runnable.
Both clocks are CLOCK_MONOTONIC (Go's nanotime, BPF's ktime), so lgf's start, end and duration
are compared with the runtime's record, not only with the fixture's own stopwatch.
(Traces of Go >= 1.22 only: the parsed dump does not read the 1.21 format.)
"""

from __future__ import annotations

import re
import subprocess

import pytest

from lgf.sources.uprobe import UprobeOptions, UprobeSource
from lgf.testing import EventCollector
from support.gobuild import build_go, go_binary, go_env
from support.stallfixture import STALLS_SRC, StallFixture, run_context, wait_attached

pytestmark = pytest.mark.bpf

FIELD = re.compile(r'Time=(?P<time>\d+)|GoID=(?P<goid>\d+)|Reason="(?P<reason>[^"]*)"|(?P<src>\w+)->(?P<dst>\w+)')


def goroutine_transitions(trace_file, version: str, goid: int) -> list[tuple[int, str, str, str]]:
    """``[(time ns, reason, from state, to state)]`` of one goroutine, from the toolchain's parser."""
    out = subprocess.run([str(go_binary(version)), "tool", "trace", "-d=parsed", str(trace_file)],
                         capture_output=True, text=True, check=True, env=go_env(version)).stdout
    rows = []
    for line in out.splitlines():
        if "StateTransition" not in line:
            continue
        f: dict = {}
        for m in FIELD.finditer(line):  # field order differs between Go versions
            f.update({k: v for k, v in m.groupdict().items() if v is not None})
        if f.get("goid") == str(goid) and "src" in f:
            rows.append((int(f["time"]), f.get("reason", ""), f["src"], f["dst"]))
    return rows


@pytest.mark.parametrize("version", ["1.25.5", "1.27.3"])
def test_channel_park_matches_the_execution_tracer(tmp_path, bpf_ok, go_toolchains, version):
    exe = build_go(STALLS_SRC, version)
    trace_file = tmp_path / "trace.out"
    src = UprobeSource(UprobeOptions(goroutine_tier="always"), run_context(exe=[str(exe)]))
    events = EventCollector()
    src.start(events)
    try:
        with StallFixture(exe, "chanrecv", "-trace", str(trace_file)) as fx:
            wait_attached(src, fx.pid)
            (res,) = fx.go()
            found = events.wait_for(lambda e: e.pid == fx.pid and e.goid == res["goid"]
                                    and e.wait_reason == "chan receive")
    finally:
        src.stop()
    assert found
    ev = found[0]
    rows = goroutine_transitions(trace_file, version, res["goid"])
    park = next(r for r in rows if r[2] == "Running" and r[3] == "Waiting" and r[1] == "chan receive")
    ready = next(r for r in rows if r[0] > park[0] and r[2] == "Waiting" and r[3] == "Runnable")
    traced_ns = ready[0] - park[0]
    print(f"go{version}: tracer park {traced_ns} ns, lgf {ev.duration_ns} ns; start differs by "
          f"{ev.start_ns - park[0]} ns, end by {ev.end_ns - ready[0]} ns")
    # The tracer and lgf saw the same park: same instants (1 ms), same length (1 ms).
    assert abs(ev.duration_ns - traced_ns) <= 1_000_000, (ev.duration_ns, traced_ns)
    assert abs(ev.start_ns - park[0]) <= 1_000_000, (ev.start_ns, park[0])
    assert abs(ev.end_ns - ready[0]) <= 1_000_000, (ev.end_ns, ready[0])
