"""The rule of lgf.idle, and where it is applied off the BPF path: config, the scope step and
the pipeline (idle waits counted, not sent), alert grouping by request, and the kernel's PC
ranges checked against ``go tool nm`` on real binaries (with and without a symbol table)."""

from __future__ import annotations

import subprocess

import capstone
import pytest

from lgf import config as cfg
from lgf.event import Event
from lgf.golang.gobinary import open_binary
from lgf.golang.pclntab import Pclntab
from lgf.idle import DEFAULT_IDLE_SITES, REQUEST_MARKERS, IdleRules
from lgf.manager import make_manager
from lgf.pipeline import SinkRoute
from lgf.run import Host
from lgf.services import Services
from lgf.stats import Stats
from support.cli import lgf, write
from support.gobuild import GO_VERSIONS, GOAPPS, build_go, go_binary

IDLESERVER_SRC = GOAPPS / "idleserver"
MS = 1_000_000
rules = IdleRules()

PARK = ["runtime.gopark"]
END = ["runtime.goexit"]
MAIN_END = ["runtime.main", "runtime.goexit"]
ACCEPT = PARK + ["runtime.netpollblock", "internal/poll.runtime_pollWait", "internal/poll.(*pollDesc).wait",
                 "internal/poll.(*FD).Accept", "net.(*netFD).accept", "net.(*TCPListener).accept",
                 "net.(*TCPListener).Accept", "net/http.(*Server).Serve", "net/http.Serve", "main.main.func1"] + END
KEEPALIVE = PARK + ["internal/poll.runtime_pollWait", "net.(*conn).Read", "net/http.(*connReader).Read",
                    "bufio.(*Reader).fill", "bufio.(*Reader).Peek", "net/http.(*conn).readRequest",
                    "net/http.(*conn).serve"] + END
BODY_READ = PARK + ["internal/poll.runtime_pollWait", "net.(*conn).Read", "net/http.(*connReader).Read",
                    "bufio.(*Reader).Read", "net/http.(*body).Read", "io.ReadAll", "main.upload",
                    "net/http.HandlerFunc.ServeHTTP", "net/http.(*ServeMux).ServeHTTP",
                    "net/http.serverHandler.ServeHTTP", "net/http.(*conn).serve"] + END


def test_a_request_handler_frame_makes_any_wait_a_request_stall():
    v = rules.judge(BODY_READ, "IO wait")
    assert (v.kind, v.scope, v.site) == ("stall", "request", "net/http.serverHandler.ServeHTTP")


def test_accept_loops_and_keepalive_connections_are_idle():
    assert rules.judge(ACCEPT, "IO wait").site == "net.(*TCPListener).Accept"
    v = rules.judge(KEEPALIVE, "IO wait")
    assert v.idle and v.site == "net/http.(*connReader).Read" and not v.scope


def test_a_cut_stack_is_never_guessed_idle():
    v = rules.judge(KEEPALIVE[:5], "IO wait")  # no runtime.goexit: the walk stopped early
    assert (v.kind, v.cut, v.site) == ("stall", True, "")
    assert rules.judge(BODY_READ[:-2] + ["net/http.serverHandler.ServeHTTP"], "IO wait").scope == "request"


@pytest.mark.parametrize("stack, reason", [
    (PARK + ["runtime.chanrecv", "runtime.chanrecv2", "main.worker"] + END, "chan receive"),
    (PARK + ["runtime.selectgo", "main.tickerLoop"] + END, "select"),
    (PARK + ["time.Sleep", "main.main"] + MAIN_END, "sleep"),  # main sleeping at start-up
    (PARK + ["runtime.block", "main.main.func3"] + END, "select (no cases)"),
    # `go c.maintainAssets(0)`: Go 1.22+ starts it through a wrapper that only calls it (caddy)
    (PARK + ["runtime.selectgo", "github.com/caddyserver/certmagic.(*Cache).maintainAssets",
             "github.com/caddyserver/certmagic.NewCache.gowrap1"] + END, "select"),
])
def test_waits_for_the_next_job_or_tick_are_idle(stack, reason):
    assert rules.judge(stack, reason).idle


@pytest.mark.parametrize("stack, reason", [
    # the stalls fixture: a helper goroutine blocked inside the closure it runs (mid-work)
    (PARK + ["runtime.chanrecv", "runtime.chanrecv1", "main.runMode.func1", "main.stallIn.func1"] + END,
     "chan receive"),
    (PARK + ["time.Sleep", "main.runMode.func14", "main.stallIn.func1"] + END, "sleep"),
    # a worker sleeping inside the job, a send at the loop head (backpressure), a lock at the head
    (PARK + ["time.Sleep", "main.process", "main.worker"] + END, "sleep"),
    (PARK + ["runtime.chansend", "runtime.chansend1", "main.worker"] + END, "chan send"),
    (PARK + ["sync.runtime_SemacquireMutex", "sync.(*Mutex).lockSlow", "sync.(*Mutex).Lock", "main.worker"] + END,
     "sync.Mutex.Lock"),
    # a batch job: main waiting on the network, nothing recognised
    (PARK + ["internal/poll.runtime_pollWait", "net.(*conn).Read", "main.fetch", "main.main"] + MAIN_END, "IO wait"),
])
def test_waits_mid_work_stay_stalls(stack, reason):
    v = rules.judge(stack, reason)
    assert (v.kind, v.scope, v.cut) == ("stall", "", False)


def test_user_idle_sites_are_fnmatch_patterns_and_can_replace_the_defaults():
    poll = PARK + ["runtime.selectgo", "myapp.(*Poller).waitForEvents", "myapp.(*Poller).run"] + END
    assert not rules.judge(poll, "select").idle
    assert IdleRules(["myapp.(*Poller).wait*"]).judge(poll, "select").site == "myapp.(*Poller).waitForEvents"
    assert not IdleRules(["myapp.*"], use_defaults=False).judge(ACCEPT, "IO wait").idle


def test_idle_options_are_checked_with_their_key_path(tmp_path):
    typo = lgf("check", str(write(tmp_path / "typo.toml", "[idle]\nreport_idl = true\n")))
    assert typo.returncode == 2
    assert "idle.report_idl: unknown key (did you mean 'report_idle'?)" in typo.stderr
    blind = lgf("check", str(write(tmp_path / "blind.toml", '[idle]\nidle_sites = ["myapp.ok", "*"]\n')))
    assert blind.returncode == 2
    assert "idle: idle_sites[1]: '*' must start with a package path" in blind.stderr
    good = write(tmp_path / "good.toml", '[idle]\nidle_sites = ["myapp.(*Poller).wait*"]\nreport_idle = true\n')
    assert lgf("check", str(good)).returncode == 0


class ListSink:
    def __init__(self):
        self.got = []

    def send(self, event):
        self.got.append(event)


@pytest.fixture
def pipeline(tmp_path):
    """A host's pipeline with the built-ins (its own scope step included) and its alert engine."""
    hosts = []

    def make(idle_toml: dict | None = None):
        raw = {"lgf": {"spool_dir": str(tmp_path), "threshold": "50ms"}, "idle": idle_toml or {}}
        m = make_manager(entry_points=False)
        host = Host(m, cfg.validate(raw, m.components()), stats=Stats())
        host.build(with_sources=False)
        hosts.append(host)
        sink = ListSink()
        host.routes.append(SinkRoute("mem", sink, receive="both"))
        return host.pipeline, host.stats, sink, host.engine
    yield make
    for host in hosts:
        host.services.close()


def park(stack, reason, goid=7, dur_ms=120, at_ms=0, **kw) -> Event:
    return Event(pid=100, comm="api", goid=goid, wait_reason=reason, start_ns=at_ms * MS,
                 end_ns=(at_ms + dur_ms) * MS, duration_ns=dur_ms * MS, source="uprobe",
                 stack=[{"func": f, "file": "", "line": 0, "pc": 0, "inlined": False} for f in stack],
                 extra={"stall": "park"}, **kw)


def test_idle_events_are_counted_and_sent_nowhere(pipeline):
    pipe, stats, sink, engine = pipeline()
    pipe.process(park(KEEPALIVE, "IO wait"))
    pipe.process(park(BODY_READ, "IO wait", goid=8))
    assert [e.goid for e in sink.got] == [8] and sink.got[0].scope == "request"
    assert stats.get("lgf_idle_waits_total", source="uprobe", site="net/http.(*connReader).Read") == 1
    assert stats.total("lgf_events_total") == 1
    assert len(engine.due(2**63 - 1)) == 1


def test_report_idle_sends_idle_events_but_never_alerts_on_them(pipeline):
    pipe, stats, sink, engine = pipeline({"report_idle": True})
    pipe.process(park(ACCEPT, "IO wait"))
    assert len(sink.got) == 1, [(e.kind, e.extra) for e in sink.got]
    (ev,) = sink.got
    assert ev.extra["verdict"] == "idle" and ev.extra["decided_by"] == "net.(*TCPListener).Accept"
    assert not engine.due(2**63 - 1)


def test_a_slow_request_makes_one_alert_with_the_request_goroutines_stack(pipeline):
    pipe, _stats, sink, engine = pipeline()
    handler_select = PARK + ["runtime.selectgo", "net/http.(*persistConn).roundTrip",
                             "net/http.(*Transport).roundTrip", "net/http/httputil.(*ReverseProxy).ServeHTTP",
                             "main.main.func4", "net/http.HandlerFunc.ServeHTTP",
                             "net/http.serverHandler.ServeHTTP", "net/http.(*conn).serve"] + END
    handler_lock = PARK + ["sync.runtime_SemacquireMutex", "sync.(*Mutex).Lock", "main.main.func4",
                           "net/http.serverHandler.ServeHTTP", "net/http.(*conn).serve"] + END
    upstream_read = PARK + ["internal/poll.runtime_pollWait", "net.(*conn).Read",
                            "net/http.(*persistConn).Read", "bufio.(*Reader).fill", "bufio.(*Reader).Peek",
                            "net/http.(*persistConn).readLoop"] + END
    # the first stall, sampled before the request could be read; then two with method and path
    pipe.process(park(handler_select, "select", goid=20, dur_ms=150))
    pipe.process(park(upstream_read, "IO wait", goid=21, dur_ms=151))
    pipe.process(park(handler_select, "select", goid=22, dur_ms=160, http_method="GET", http_path="/api"))
    pipe.process(park(handler_lock, "sync.Mutex.Lock", goid=22, dur_ms=90, http_method="GET", http_path="/api"))
    assert sorted(e.goid for e in sink.got) == [20, 22, 22], "the transport's read is the caller's story"
    alerts = engine.due(2**63 - 1)
    assert len(alerts) == 1, [(a.extra["group_by"], a.extra["count"]) for a in alerts]
    (alert,) = alerts
    assert alert.extra["count"] == 3 and alert.scope == "request"
    assert alert.goid == 22 and any(f["func"] == "net/http.serverHandler.ServeHTTP" for f in alert.stack)
    assert (alert.http_method, alert.http_path) == ("GET", "/api")


def test_other_stalls_keep_their_own_groups(pipeline):
    pipe, _stats, _sink, engine = pipeline()
    pipe.process(park(PARK + ["time.Sleep", "main.process", "main.worker"] + END, "sleep", goid=30))
    pipe.process(park(BODY_READ, "IO wait", goid=31, http_method="POST", http_path="/upload"))
    assert sorted(a.scope for a in engine.due(2**63 - 1)) == ["", "request"]


def test_the_scope_step_judges_pcs_through_the_hosts_services(pipeline, tmp_path):
    """An event with PCs and no stack is symbolized and judged in one place (Services.judge); a
    binary that cannot be read is a cut stack: a stall, never guessed idle."""
    pipe, stats, sink, _engine = pipeline()
    event = Event(pid=0, exe=str(tmp_path / "gone"), goid=9, wait_reason="IO wait", pcs=[0x401000],
                  start_ns=0, end_ns=120 * MS, duration_ns=120 * MS, source="uprobe", extra={"stall": "park"})
    pipe.process(event)
    assert event.extra["verdict"] == "stall" and event.extra["stack_cut"] is True
    assert sink.got == [event] and stats.total("lgf_idle_waits_total") == 0


def test_a_process_whose_binary_cannot_be_read_is_not_looked_for_at_every_stall(tmp_path, monkeypatch):
    from lgf.context import RunContext
    from lgf.plugins import scope
    from lgf.services import Services

    class Counted(Services):
        """The real services, counting the stacks they were asked to judge."""
        judged = 0

        def judge(self, *args, **kwargs):
            Counted.judged += 1
            return super().judge(*args, **kwargs)

    step = scope.ScopeEnricher(None, RunContext(config=None, stats=Stats(), services=Counted()))

    def stall(exe):
        event = Event(pid=0, exe=str(exe), goid=9, wait_reason="IO wait", pcs=[0x401000], extra={"stall": "park"})
        step.lgf_enrich(event)
        return event
    for _ in range(3):
        assert stall(tmp_path / "gone").extra["stack_cut"] is True  # a cut stack: a stall
    assert Counted.judged == 1
    assert stall(tmp_path / "other").extra["stack_cut"] is True and Counted.judged == 2  # another process
    monkeypatch.setattr(scope, "UNREADABLE_RETRY_S", 0.0)  # past the retry time: looked for again
    stall(tmp_path / "third")
    stall(tmp_path / "third")
    assert Counted.judged == 4


@pytest.mark.parametrize("version", GO_VERSIONS)
def test_the_scope_step_judges_a_real_binarys_pcs_like_its_names(version, go_toolchains, tmp_path):
    from lgf.context import RunContext
    from lgf.plugins.scope import ScopeEnricher
    from lgf.services import Services
    exe = build_go(IDLESERVER_SRC, version)
    addr = {n: lo for n, (lo, _hi) in open_binary(exe).pcln_spans.items()}
    names = ["net.(*TCPListener).Accept", "net/http.(*Server).Serve", "runtime.goexit"]
    pcs = [addr[n] + 1 for n in names]  # return addresses: inside the function, looked up at pc-1
    step = ScopeEnricher(None, RunContext(config=None, stats=Stats(), services=Services()))
    event = Event(pid=0, exe=str(exe), goid=3, wait_reason="IO wait", pcs=pcs, extra={"stall": "park"})
    step.lgf_enrich(event)
    assert step.functions_of(event)[:3] == names
    assert event.extra["verdict"] == "idle" and event.extra["decided_by"] == "net.(*TCPListener).Accept"


@pytest.mark.parametrize("version", GO_VERSIONS)
def test_pc_ranges_are_the_functions_go_tool_nm_lists(version, go_toolchains):
    exe = build_go(IDLESERVER_SRC, version)
    nm = subprocess.run([str(go_binary(version)), "tool", "nm", "-size", str(exe)], capture_output=True,
                        text=True, check=True).stdout
    want = {"idle": set(), "request": set()}
    for line in nm.splitlines():
        addr, size, kind, name = line.split(None, 3)
        if kind in "Tt":
            key = "request" if rules.is_request_marker(name) else "idle" if rules.is_idle_site(name) else ""
            if key:
                want[key].add((int(addr, 16), int(addr, 16) + int(size)))
    got = rules.pc_ranges(open_binary(exe))
    assert {k: set(got[k]) for k in want} == want
    goexit = next(int(ln.split()[0], 16) for ln in nm.splitlines() if ln.split()[-1] == "runtime.goexit.abi0")
    assert any(lo <= goexit < hi for lo, hi in got["start_skip"])
    assert len(got["wait_primitive"]) < 100, "the runtime is mostly one run of functions"
    assert want["request"] and len(want["idle"]) >= 8
    stripped = rules.pc_ranges(open_binary(build_go(IDLESERVER_SRC, version, strip=True)))
    assert [lo for lo, _ in stripped["idle"]] == [lo for lo, _ in got["idle"]], "pclntab agrees with .symtab"


def test_the_default_patterns_name_real_functions():
    assert all("." in p for p in DEFAULT_IDLE_SITES + REQUEST_MARKERS)


def test_stdout_names_the_request_a_stall_belongs_to():
    from lgf.sinks.stdout import format_line

    named = park(BODY_READ, "IO wait", scope="request", http_method="POST", http_path="/upload")
    assert format_line(named).endswith('"IO wait" [POST /upload]')
    assert format_line(park(BODY_READ, "IO wait", scope="request")).endswith('"IO wait" [request]')
    assert "[" not in format_line(park(KEEPALIVE, "IO wait"))


class Calls:
    """Call-site facts of a stack, frame by frame (what Services reads from the binary's code):
    ``loops[i]`` whether frame i calls on from inside a loop (None: cannot tell), ``inlined``
    the indexes of inlined frames."""

    def __init__(self, loops, inlined=()):
        self.loops, self.inl = loops, set(inlined)

    def inlined(self, i):
        return i in self.inl

    def in_loop(self, i):
        return self.loops[i]


MAINTENANCE = PARK + ["runtime.selectgo", "github.com/prometheus/alertmanager/silence.(*Silences).Maintenance",
                      "main.run.func1"] + END
AWAIT = PARK + ["runtime.selectgo", "main.await", "main.awaiter"] + END


def test_a_service_loop_under_setup_frames_is_idle_and_a_job_in_a_loop_is_not():
    # the waiter selects inside its loop; main.run.func1 calls it once, then wg.Done
    v = rules.judge(MAINTENANCE, "select", Calls([None, True, True, False, None]))
    assert v.idle and v.site == "service loop: github.com/prometheus/alertmanager/silence.(*Silences).Maintenance"
    # await selects in a loop too, but awaiter calls it from its loop over jobs: a job mid-way
    assert not rules.judge(AWAIT, "select", Calls([None, True, True, True, None])).idle
    # no call sites (a caller without the binary's code): rule 6 does not apply
    assert not rules.judge(MAINTENANCE, "select").idle


@pytest.mark.parametrize("loops, inlined, reason", [
    ([None, True, None, False, None], (), "select"),  # the waiter's loops cannot be told
    ([None, True, True, None, None], (), "select"),  # a frame under it cannot be told
    ([None, True, True, False, None], (2,), "select"),  # an inlined waiter: its loop may be its caller's
    ([None, True, False, False, None], (), "select"),  # a one-off select (not the main goroutine)
    ([None, True, True, False, None], (), "sleep"),  # a sleep in a loop: as often a retry's back-off
    ([None, True, True, False, None], (), "sync.Mutex.Lock"),
])
def test_a_service_loop_is_never_guessed(loops, inlined, reason):
    assert not rules.judge(MAINTENANCE, reason, Calls(loops, inlined)).idle


def test_the_main_goroutine_waiting_once_under_main_main_is_idle():
    stack = PARK + ["runtime.selectgo", "main.run", "main.main"] + MAIN_END
    v = rules.judge(stack, "select", Calls([None, True, False, False, None, None]))
    assert v.idle and v.site == "service loop: main.run"
    # main.main calling run from a loop (a batch over inputs): each wait is a job's
    assert not rules.judge(stack, "select", Calls([None, True, False, True, None, None])).idle


def call_sites(exe, caller_prefix: str, callee: str) -> list[int]:
    """Return addresses of every direct call to ``callee`` in functions named ``caller_prefix*``."""
    cs = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    cs.syntax = capstone.CS_OPT_SYNTAX_ATT
    with Pclntab.from_elf(str(exe)) as tab:
        target = tab.func_by_name(callee)
        out = []
        for name, lo, hi in tab.funcs():
            if not name.startswith(caller_prefix):
                continue
            off = tab.elf.vaddr_to_offset(lo, hi - lo)
            for addr, size, mnemonic, op in cs.disasm_lite(bytes(tab.buf[off:off + hi - lo]), lo):
                if mnemonic.startswith("call") and op == hex(target):
                    out.append(addr + size)
        return out


@pytest.mark.parametrize("version", GO_VERSIONS)
def test_service_loops_are_told_from_jobs_by_the_loops_of_real_code(version, go_toolchains):
    """The idleserver fixture built by every toolchain: stacks made of its real call sites, judged
    by the host's services (symbolized, the binary's loops read from its code): the two service
    loops (Alertmanager's shapes) are idle, await called from the awaiter's loop is a stall, as is
    process called from the worker's loop (a sleep: rule 6 never applies)."""
    exe = build_go(IDLESERVER_SRC, version)
    entry = {n: lo for n, (lo, _hi) in open_binary(exe).pcln_spans.items()}
    park = [entry["runtime.gopark"] + 1, entry["runtime.selectgo"] + 1]
    goexit = entry["runtime.goexit"] + 1
    services = Services()
    try:
        def verdict(waiter: str, caller_prefix: str) -> list:
            (inner,) = call_sites(exe, waiter, "runtime.selectgo")
            outer = call_sites(exe, caller_prefix, waiter)
            assert outer, (waiter, caller_prefix)
            return [services.judge_stack(str(exe), park + [inner, ret, goexit], "select") for ret in outer]
        for v in verdict("main.(*maintainer).run", "main.main.func"):  # the closure calling it, then wg.Done
            assert v.idle and v.site == "service loop: main.(*maintainer).run", v
        for v in verdict("main.(*dispatcher).run", "main."):  # (*dispatcher).Run, or where it was inlined
            assert v.idle and v.site == "service loop: main.(*dispatcher).run", v
        for v in verdict("main.await", "main.awaiter"):
            assert not v.idle and not v.cut, v
        (inner,) = call_sites(exe, "main.process", "time.Sleep")
        (outer,) = call_sites(exe, "main.worker", "main.process")
        v = services.judge_stack(str(exe), [entry["runtime.gopark"] + 1, inner, outer, goexit], "sleep")
        assert not v.idle and not v.cut, v
    finally:
        services.close()
