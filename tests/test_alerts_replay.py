"""End to end through `lgf replay`: raw stalls in, classified events and grouped alerts out."""

from __future__ import annotations

import json

from lgf.event import Event, write_events
from support.cli import lgf, write

MS = 1_000_000


def recording(path):
    evs = []
    for i in range(30):  # one incident: a channel consumer stalls 30 times across 3 goroutines
        evs.append(Event(pid=4242, comm="api", exe="/srv/api", goid=10 + i % 3, build_id="b1", go_version="go1.25.5",
                         start_ns=10**9 + i * 300 * MS, end_ns=10**9 + i * 300 * MS + (60 + i) * MS,
                         wait_reason="chan receive", stack_summary=["main.(*Queue).Pop"],
                         extra={"stall": "park"}, source="uprobe"))
    evs.append(Event(pid=4242, comm="api", exe="/srv/api", goid=0, build_id="b1", start_ns=20 * 10**9,
                     end_ns=20 * 10**9 + 1500 * MS, extra={"stall": "stw", "stw_reason": "GC mark termination"}))
    evs.append(Event(pid=77, comm="batch", exe="/srv/batch", goid=5, build_id="c1", start_ns=10**9,
                     end_ns=10**9 + 90 * MS, wait_reason="sync.Mutex.Lock", extra={"stall": "park"}))
    evs.append(Event(pid=77, comm="batch", exe="/srv/batch", goid=5, build_id="c1", start_ns=10**9,
                     end_ns=10**9 + 10 * MS, wait_reason="sleep", extra={"stall": "park"}))  # under threshold
    write_events(path, evs, fmt="msgpack")
    return evs


def test_replay_classifies_groups_and_silences(tmp_path):
    rec = tmp_path / "rec.msgpack"
    recording(rec)
    out = tmp_path / "out.jsonl"
    cfg = write(tmp_path / "plugins.toml", f"""
[lgf]
threshold = "50ms"
env = "prod"
spool_dir = "{tmp_path / 'spool'}"

[alerts.tags]
team = "core"

[silences]
rules = [{{ matchers = ["service=batch"], comment = "batch may stall" }}]

[[classifiers]]
use = "waitreason"

[[sinks]]
use = "file"
path = "{out}"
receive = "both"
""")
    res = lgf("replay", str(rec), "--config", str(cfg))
    assert res.returncode == 0, res.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    events = [x for x in lines if x["kind"] == "stall"]
    alerts = [x for x in lines if x["kind"] == "alert"]
    assert len(events) == 33
    assert {e["cause"] for e in events} == {"channel", "gc_stw", "lock", "sleep"}
    assert all(e["env"] == "prod" and e["tags"] == {"team": "core"} for e in events)
    by_cause = {a["cause"]: a for a in alerts}
    assert set(by_cause) == {"channel", "gc_stw"}  # lock was silenced (service=batch), sleep under threshold
    ch = by_cause["channel"]
    assert ch["count"] == 30 and ch["goroutines"] == 3 and ch["service"] == "api"
    assert ch["worst_ns"] == 89 * MS and ch["total_ns"] == sum((60 + i) * MS for i in range(30))
    assert ch["top_frame"] == "main.(*Queue).Pop" and ch["severity"] == "info"
    assert by_cause["gc_stw"]["severity"] == "critical"
    assert ch["trace_id"] == "" and ch["id"] != by_cause["gc_stw"]["id"]  # no stall knew its trace


def test_replay_with_the_journal_journals_every_stall_of_a_group_and_leaves_none_open(tmp_path):
    """``--journal``: the groups' stalls go through the alert journal as in ``lgf run``, the
    same events and alerts come out, and the journal is empty once every group closed."""
    from lgf.journal import AlertJournal

    rec = tmp_path / "rec.msgpack"
    recording(rec)
    outputs = {}
    for journal in (False, True):
        out = tmp_path / f"out-{journal}.jsonl"
        cfg = write(tmp_path / f"plugins-{journal}.toml", f"""
[lgf]
spool_dir = "{tmp_path / 'spool'}"

[[classifiers]]
use = "waitreason"

[[sinks]]
use = "file"
path = "{out}"
receive = "both"
""")
        res = lgf("replay", str(rec), "--config", str(cfg), *(["--journal"] if journal else []))
        assert res.returncode == 0, res.stderr
        outputs[journal] = [json.loads(line) for line in out.read_text().splitlines()]
        said = res.stderr.strip().splitlines()[-1]
    # 32 stalls reach the 50 ms threshold: 30 channel waits, one GC stop-the-world, one lock wait
    assert said.endswith("alert journal " + str(tmp_path / "spool" / "alert-journal.sqlite") + ": 32 stall(s) written")

    def summary(rows):
        return sorted((r["kind"], r["cause"], r.get("count", 1)) for r in rows)
    assert summary(outputs[True]) == summary(outputs[False])
    assert sum(a["count"] for a in outputs[True] if a["kind"] == "alert") == 32
    journal = AlertJournal(tmp_path / "spool")
    assert journal.counts() == {"stalls": 0, "outbox": 0}
    journal.close()


def test_replay_with_the_journal_of_a_running_lgf_says_it_cannot_open_it_and_still_replays(tmp_path):
    from lgf.journal import AlertJournal

    rec = tmp_path / "rec.msgpack"
    recording(rec)
    out = tmp_path / "out.jsonl"
    cfg = write(tmp_path / "plugins.toml", f"""
[lgf]
spool_dir = "{tmp_path / 'spool'}"

[[sinks]]
use = "file"
path = "{out}"
""")
    running = AlertJournal(tmp_path / "spool")  # another lgf owns that spool_dir's journal
    try:
        res = lgf("replay", str(rec), "--config", str(cfg), "--journal")
    finally:
        running.close()
    assert res.returncode == 0, res.stderr
    assert "in use by another lgf process" in res.stderr
    assert res.stderr.strip().endswith("the alert journal could not be opened (see above)")
    assert sum(json.loads(line)["kind"] == "stall" for line in out.read_text().splitlines()) == 33


def test_stall_windows_are_kept_only_where_an_http_server_shows_them(tmp_path):
    """A replay has no /debug/latency: its stalls make the same alerts and no stall window; a
    host with [http] keeps them for the page."""
    from lgf.event import read_events
    from lgf.run import open_host

    rec = tmp_path / "rec.msgpack"
    recording(rec)
    replayed = open_host(str(write(tmp_path / "replay.toml", f'[lgf]\nspool_dir = "{tmp_path / "a"}"\n'
                                   '[[sinks]]\nuse = "stdout"\n')), with_sources=False)
    seen = []
    replayed.pipeline.observers.append(seen.append)
    assert replayed.replay(read_events(rec)) == 33
    assert len(seen) == 33 and replayed.engine.windows.recent() == []

    served = open_host(str(write(tmp_path / "http.toml", f'[lgf]\nspool_dir = "{tmp_path / "b"}"\n'
                                 '[http]\nenabled = true\nlisten = "127.0.0.1:0"\n')), with_sources=False)
    served._start_http()
    try:
        served.pipeline.process_batch(list(read_events(rec)))
        assert sum(w["count"] for w in served.engine.recent(0)["windows"]) == 33
    finally:
        served.http.stop()


def test_a_replayed_stall_is_never_named_after_the_process_that_holds_its_pid_here(tmp_path, go_toolchains):
    """A recording's pids are another host's (or another time's): the replay names a service
    from the recorded comm, never from the Go binary of whatever process holds that pid here now,
    which a live lgf does read."""
    import subprocess

    from lgf.event import read_events
    from lgf.run import open_host
    from support.gobuild import GO_VERSIONS, build_go
    from support.stallfixture import STALLS_SRC

    live = subprocess.Popen([str(build_go(STALLS_SRC, GO_VERSIONS[-1])), "chanrecv"], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL)
    try:
        rec = tmp_path / "rec.msgpack"
        write_events(rec, [Event(pid=live.pid, comm="recorded", exe="/srv/recorded", goid=7, start_ns=10**9,
                                 end_ns=10**9 + 80 * MS, wait_reason="chan receive", extra={"stall": "park"})])
        host = open_host(str(write(tmp_path / "c.toml", f'[lgf]\nspool_dir = "{tmp_path / "s"}"\n'
                                   '[[sinks]]\nuse = "stdout"\n')), with_sources=False)
        here = host.engine.service_of(Event(pid=live.pid, comm="other", exe="/srv/other"))
        assert here == "stalls"  # a live lgf names the process holding that pid by its main module
        seen = []
        host.pipeline.observers.append(seen.append)
        host.replay(read_events(rec))
        assert [e.extra["service"] for e in seen] == ["recorded"]
    finally:
        live.kill()
        live.wait()


def test_a_replayed_stall_is_never_symbolized_from_the_process_that_holds_its_pid_here(tmp_path, go_toolchains):
    """Likewise for its stack: the scope step and the symbolizer read the recorded ``exe`` (absent
    here: the stack stays unsymbolized and is judged cut), never ``/proc/PID/exe`` of the live Go
    process holding that pid, whose binary would symbolize these PCs, wrongly, as its own."""
    import subprocess

    from lgf.event import read_events
    from lgf.golang.pclntab import Pclntab
    from lgf.run import open_host
    from support.gobuild import GO_VERSIONS, build_go
    from support.stallfixture import STALLS_SRC

    binary = build_go(STALLS_SRC, GO_VERSIONS[-1])
    pc = Pclntab.from_elf(binary).func_by_name("main.main") + 1  # a PC this binary names main.main
    live = subprocess.Popen([str(binary), "chanrecv"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        rec = tmp_path / "rec.msgpack"
        stall = Event(pid=live.pid, comm="recorded", exe="/srv/recorded", goid=7, start_ns=10**9,
                      end_ns=10**9 + 80 * MS, wait_reason="chan receive", pcs=[pc], extra={"stall": "park"})
        write_events(rec, [stall])
        config = write(tmp_path / "c.toml", f'[lgf]\nspool_dir = "{tmp_path / "s"}"\n'
                       '[[enrichers]]\nuse = "symbolizer"\n[[sinks]]\nuse = "stdout"\n')
        live_host = open_host(str(config), with_sources=False)
        assert live_host.services.functions(f"/proc/{live.pid}/exe", [pc]) == ["main.main"]  # what a mix-up would read
        live_host.shutdown()
        host = open_host(str(config), with_sources=False)
        seen = []
        host.pipeline.observers.append(seen.append)
        host.replay(read_events(rec))
        assert [(e.stack, e.extra.get("stack_cut")) for e in seen] == [([], True)]
        assert host.stats.total("lgf_symbolizer_failures_total") == 1
    finally:
        live.kill()
        live.wait()
