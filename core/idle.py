"""What lgf calls a stall, and what only an idle wait: the one definition every tier applies.

A **stall** is a wait someone is waiting on: a goroutine kept from running in the middle of a
unit of work (serving a request, inside a job). An **idle wait** is a goroutine waiting for new
work. The sampler, the goroutine tier (from the PC ranges below, in the kernel), the scope plugin
and the alert policy all decide with :class:`IdleRules`, so they can never disagree.

The rule, applied by :meth:`IdleRules.judge` to one parked goroutine's stack (innermost first),
first match wins:

1. **Request scope.** A frame matching ``REQUEST_MARKERS`` (``net/http.serverHandler.ServeHTTP``,
   HTTP/2 ``runHandler``, gRPC ``handleStream``) anywhere in the stack: the goroutine serves a
   request, so its wait is a **stall** with ``scope = "request"``, even when an idle site is also
   there (a handler reading its request body goes through the server's read loop).
2. **Cut stack.** The walk stopped before the goroutine's start (no ``runtime.goexit`` outermost):
   the deciding frames may be the missing ones, so lgf does not guess: **stall**, ``cut = True``.
3. **Idle site.** A frame matching an idle site (``DEFAULT_IDLE_SITES`` plus the user's
   ``idle_sites``): accept loops, server connections waiting for their next request, HTTP client
   connections' read and write loops: **idle**, ``site`` = that frame.
4. **select {}**: wait reason ``select (no cases)``: **idle**.
5. **Loop head.** The goroutine waits on a channel receive, a select, a sleep or a
   ``sync.Cond.Wait`` called *directly by the function it was started with* (``main.main`` for
   the main goroutine): it is at the head of its own loop, waiting for its next job or tick
   (``for job := range jobs``, ``for range ticker.C``, ``for { select { case <-t.C: ... case
   <-ctx.Done(): return } }``, ``time.Sleep`` between polls, a main goroutine sleeping at
   start-up or waiting for a signal): **idle**, ``site = "loop head: <function>"``. The same wait
   one call deeper (inside a function the loop calls) is part of a job: a stall. A send, a lock,
   a WaitGroup and the network are never loop heads: a blocked send is backpressure, a lock is
   contention, and both mean work waits.
6. **Service loop.** A select or channel receive made inside a loop of the function that waits
   (the *waiter*), when no frame between the waiter and the goroutine's start calls on from
   inside a loop of its own: the goroutine was started to run that one loop, and the frames
   under it only set up and tear down around one call (Alertmanager: ``main.run.func1`` calls
   ``(*Silences).Maintenance`` then ``wg.Done``; ``(*Dispatcher).Run`` resets its maps and calls
   ``(*Dispatcher).run``; oklog's ``Group.Run.func1`` runs an actor and sends its error): **idle**,
   ``site = "service loop: <waiter>"``. A job's wait is reached from a loop further down: a
   worker's ``for job := range jobs``, net/http's ``for {}`` around ``persistConn.roundTrip``, a
   retry loop, a pipeline's loop over its stages: a stall. Decided from the machine code
   (:mod:`lgf.golang.loops`: the loops of each function, from its control-flow graph), so only
   when the caller passes the stack's call sites (``calls``); a frame whose loops cannot be told
   (not amd64, a jump table, an inlined waiter) keeps the wait a stall. The main goroutine's
   waiter needs no loop of its own (``main.main`` calls ``run``, which starts everything, then
   waits once for a signal: rule 5's main goroutine one call deeper). What it cannot see: a
   goroutine started for one job whose work is a select loop itself (``go collect(job)`` looping
   over its sub-results until done) has a service loop's shape and is judged idle; the goroutines
   doing the sub-work, where the time goes, are still judged on their own stacks.
7. Anything else is a **stall** with no scope: a batch job or a worker blocked mid-work is never
   made invisible.

Why not the other candidate rules (issue 19, measured on Debian's Alertmanager): names and
sizes of the frames under the waiter (``go f(x)`` wrappers, "thin" functions) miss
``main.run.func1`` and ``(*Dispatcher).Run``, which do real work around their one call; "the same
waiter as its last parks" (or "woken by a ticker") would hide a worker that waits on the same slow
upstream for every job, the recurring stall lgf exists to show, and needs per-goroutine history.
Go's own goroutine profile does not classify waits: it gives each goroutine's wait reason, how
long it has waited (``, 15 minutes``) and its stack, and leaves the reading to people. The loop structure is what
"waiting for the next iteration of the goroutine's one job" means, it is a property of the
code (the same for every park of the stack, so cached with the verdict), and it errs to the
stall side whenever the code cannot be read.

Why HTTP client connections (``persistConn.readLoop``/``writeLoop``, the HTTP/2 client read
loop) are idle sites even while a response is late: the goroutine that made the call waits in
``RoundTrip`` for exactly as long, and that one is reported (with the request's scope when it
serves one). The loops are never the only witness, so one slow upstream tells one story.

Patterns are ``fnmatch`` patterns on the Go function name as the pclntab spells it
(``net/http.(*conn).serve``); ``*`` matches anything, the literal ``*`` of a pointer receiver
included, so ``myapp.(*Poller).wait*`` works as written.

Cost: :meth:`judge` is a few string comparisons per frame (compiled regular expressions, cached
per function name), and for rule 6 a cached lookup per frame below the waiter (each function's
code is analysed once per binary); :meth:`pc_ranges` scans the binary's function table once per binary.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Protocol

__all__ = ["DEFAULT_IDLE_SITES", "LOOP_HEAD_REASONS", "REQUEST_MARKERS", "SERVICE_LOOP_REASONS", "CallSites",
           "IdleOptions", "IdleRules", "Verdict", "options_of", "rules_of", "service_loop", "stack_was_cut"]

DEFAULT_IDLE_SITES: tuple[str, ...] = (
    # accept loops
    "net.(*TCPListener).Accept*",
    "net.(*UnixListener).Accept*",
    "net/http.(*Server).Serve",
    "net/http.(*onceCloseListener).Accept",
    # net/http HTTP/1 server: a connection waiting for its next request (no handler frame), and
    # the background read that watches the connection while a handler runs
    "net/http.(*conn).readRequest",
    "net/http.(*connReader).Read",
    "net/http.(*connReader).backgroundRead",
    # HTTP/2 server read and serve loops: net/http's bundle (Go <= 1.26), its internal package
    # (Go 1.27+), and golang.org/x/net/http2
    "net/http.(*http2serverConn).readFrames",
    "net/http.(*http2serverConn).serve",
    "net/http/internal/http2.(*serverConn).readFrames",
    "net/http/internal/http2.(*serverConn).serve",
    "golang.org/x/net/http2.(*serverConn).readFrames",
    "golang.org/x/net/http2.(*serverConn).serve",
    # HTTP client connections between responses (the caller waits in RoundTrip: see above)
    "net/http.(*persistConn).readLoop",
    "net/http.(*persistConn).writeLoop",
    "net/http.(*http2ClientConn).readLoop",
    "net/http/internal/http2.(*ClientConn).readLoop",
    "golang.org/x/net/http2.(*ClientConn).readLoop",
    # gRPC transports' connection loops (the handlers run elsewhere, under handleStream)
    "google.golang.org/grpc/internal/transport.(*http2Server).HandleStreams",
    "google.golang.org/grpc/internal/transport.(*http2Server).keepalive",
    "google.golang.org/grpc/internal/transport.(*http2Client).reader",
    "google.golang.org/grpc/internal/transport.(*http2Client).keepalive",
    "google.golang.org/grpc/internal/transport.(*controlBuffer).get",
    "google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run",
)
"""Function patterns that mark an idle wait when in a parked goroutine's stack (rule 3)."""

REQUEST_MARKERS: tuple[str, ...] = (
    "net/http.serverHandler.ServeHTTP",
    "net/http.(*http2serverConn).runHandler",
    "net/http/internal/http2.(*serverConn).runHandler",
    "golang.org/x/net/http2.(*serverConn).runHandler",
    "google.golang.org/grpc.(*Server).handleStream",
)
"""Function patterns that mark a unit of work: a request being served (rule 1)."""

SERVICE_LOOP_REASONS = frozenset({"chan receive", "select"})
"""Wait reasons of a service loop's head (rule 6). Not ``sleep`` nor ``sync.Cond.Wait``: a sleep in a
loop is as often a retry's back-off inside a job as a poller's period."""

LOOP_HEAD_REASONS = frozenset({
    "chan receive", "chan receive (nil chan)", "select", "sleep", "sync.Cond.Wait",
})
"""Wait reasons that mean "waiting for the next job or tick" when called directly by the
goroutine's start function (rule 5)."""

NO_CASES_REASON = "select (no cases)"

WAIT_PRIMITIVES = ("runtime.", "internal/", "time.Sleep", "sync.(*Cond).Wait", "sync.runtime_",
                   "reflect.Select", "reflect.chanrecv", "reflect.rselect", "reflect.Value.Recv",
                   "reflect.Value.recv")
"""Frame prefixes between gopark and the code that asked to wait (a loop-head wait is called
by the start function through only these)."""

STACK_ENDS = ("runtime.goexit", "runtime.main", "runtime.mstart", "runtime.rt0_go")
"""Functions at the very start of a goroutine's stack: a stack whose outermost frame is not one
of these was cut before its start."""

START_SKIP = ("runtime.goexit", "runtime.main")
"""Frames outside the start function (``runtime.main`` calls ``main.main``)."""


@dataclass(frozen=True)
class Verdict:
    """What :meth:`IdleRules.judge` decided about one parked goroutine."""

    kind: str
    """``"stall"`` or ``"idle"``."""
    scope: str
    """``"request"`` when the goroutine serves a request, else ``""``."""
    site: str
    """The frame (or ``"loop head: <function>"``, ``"select (no cases)"``) that decided; ``""``
    when nothing did (a stall by default, or a cut stack)."""
    cut: bool = False
    """The stack was cut before the goroutine's start: not judged idle, whatever it showed."""

    @property
    def idle(self) -> bool:
        return self.kind == "idle"

    def as_extra(self) -> dict:
        """What an event carries of it: ``verdict``, ``decided_by`` (the site, when one decided)
        and ``stack_cut`` (only when true). The scope goes in the event's own ``scope``.

        Made once per verdict and shared (a storm's stalls share a few verdicts): copy it into
        the event (``extra.update``), never change it."""
        return self._extra

    @cached_property
    def _extra(self) -> dict:
        out: dict = {"verdict": self.kind}
        if self.site:
            out["decided_by"] = self.site
        if self.cut:
            out["stack_cut"] = True
        return out


def stack_was_cut(functions: Sequence[str]) -> bool:
    """True when ``functions`` (innermost first) does not reach the goroutine's start."""
    return not functions or not functions[-1].startswith(STACK_ENDS)


def _compile(patterns: Iterable[str]) -> re.Pattern | None:
    pats = [p for p in patterns if p]
    if not pats:
        return None
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in pats))


class IdleRules:
    """The rule of the module docstring, with the user's idle sites added.

    ``idle_sites``: more fnmatch patterns (``plugins.toml``: ``[idle] idle_sites``);
    ``use_defaults = False`` keeps only those (``DEFAULT_IDLE_SITES`` off; the request markers,
    ``select {}`` and loop-head rules stay).
    """

    def __init__(self, idle_sites: Iterable[str] = (), use_defaults: bool = True):
        self.idle_sites = tuple(DEFAULT_IDLE_SITES if use_defaults else ()) + tuple(idle_sites)
        self.request_markers = REQUEST_MARKERS
        for p in self.idle_sites:
            if not isinstance(p, str) or not p.strip():
                raise ValueError(f"idle site {p!r}: expected a non-empty function pattern")
        self._idle = _compile(self.idle_sites)
        self._request = _compile(self.request_markers)
        self._is_idle = lru_cache(maxsize=16384)(self._match_idle)
        self._is_request = lru_cache(maxsize=16384)(self._match_request)

    def _match_idle(self, func: str) -> bool:
        return bool(self._idle and self._idle.match(func))

    def _match_request(self, func: str) -> bool:
        return bool(self._request.match(func))

    def is_idle_site(self, func: str) -> bool:
        return self._is_idle(func)

    def is_request_marker(self, func: str) -> bool:
        return self._is_request(func)

    def judge(self, functions: Sequence[str], wait_reason: str = "", calls: CallSites | None = None) -> Verdict:
        """The verdict on a goroutine parked with ``wait_reason`` whose stack is ``functions``
        (Go function names, innermost first, inlined frames included, as the symbolizer gives
        them; the runtime's own frames may be there or not). ``calls``: where each frame's call
        sits in its function's loops (rule 6); without it, rule 6 never applies."""
        for f in functions:
            if self._is_request(f):
                return Verdict("stall", "request", f)
        if stack_was_cut(functions):
            return Verdict("stall", "", "", cut=True)
        for f in functions:
            if self._is_idle(f):
                return Verdict("idle", "", f)
        if wait_reason == NO_CASES_REASON:
            return Verdict("idle", "", NO_CASES_REASON)
        if wait_reason in LOOP_HEAD_REASONS:
            start = start_function(functions)
            if start and waiter_of(functions) == start:
                return Verdict("idle", "", f"loop head: {start}")
        if wait_reason in SERVICE_LOOP_REASONS and calls is not None:
            waiter = service_loop(functions, calls)
            if waiter:
                return Verdict("idle", "", f"service loop: {waiter}")
        return Verdict("stall", "", "")

    def pc_ranges(self, binary) -> dict[str, list[tuple[int, int]]]:
        """``{"idle": [(lo, hi), ...], "request": [...]}``: the ELF address ranges ``[lo, hi)`` of
        every function matching an idle site or a request marker in ``binary``
        (:class:`lgf.golang.gobinary.GoBinary`: its ``.symtab``, or its pclntab when stripped),
        sorted, for deciding in the kernel from return addresses (add the load bias for PIE).

        Only out-of-line code is covered: a matching function the compiler inlined into another
        shows up only in the symbolized stack (:meth:`judge` sees it; the default sites and
        markers are not inlined in Go 1.21-1.27's net/http).

        Two more keys let the kernel apply the loop-head rule too (optional):
        ``"wait_primitive"`` (the runtime and the other ``WAIT_PRIMITIVES``: skip these from the
        innermost frame to find the waiter) and ``"start_skip"`` (``runtime.goexit``,
        ``runtime.main``, ``gowrapN`` wrappers: the frames outside the start function). A park
        whose reason is in ``LOOP_HEAD_REASONS`` and whose waiter is followed only by
        ``start_skip`` frames is idle. Their adjacent functions are merged into one range.
        """
        out: dict[str, list[tuple[int, int]]] = {"idle": [], "request": [], "wait_primitive": [],
                                                 "start_skip": []}
        previous = ""
        for name, lo, hi in sorted(_functions(binary), key=lambda f: f[1]):
            if self._is_request(name):
                out["request"].append((lo, hi))
            elif self._is_idle(name):
                out["idle"].append((lo, hi))
            merged = ""
            if name.startswith(START_SKIP) or _GO_WRAPPER.search(name):
                merged = "start_skip"
            elif name.startswith(WAIT_PRIMITIVES):
                merged = "wait_primitive"
            if merged and previous == merged:
                out[merged][-1] = (out[merged][-1][0], hi)
            elif merged:
                out[merged].append((lo, hi))
            previous = merged
        return out


_GO_WRAPPER = re.compile(r"\.gowrap\d+$")


def start_function(functions: Sequence[str]) -> str:
    """The function the goroutine was started with: the outermost frame below
    ``runtime.goexit`` (and ``runtime.main`` for the main goroutine), past the wrapper Go 1.22+
    compiles for ``go f(x)`` (``pkg.F.gowrap1``, which only calls ``f``); "" if none.

    Go 1.21 named that wrapper like any closure (``pkg.F.func1``): there a worker started as
    ``go worker(jobs)`` is not recognised at its loop head and stays a stall (the safe side);
    ``go worker()`` and ``go func() { ... }()`` are recognised in every version."""
    for f in reversed(functions):
        if not f.startswith(START_SKIP) and not _GO_WRAPPER.search(f):
            return f
    return ""


class CallSites(Protocol):
    """Where each frame of a stack (indexes as in ``functions``) makes its call, for rule 6
    (:meth:`lgf.services.Services.judge` makes one from the binary's code)."""

    def inlined(self, i: int) -> bool:
        """Frame ``i`` was inlined into its caller (its call site is its caller's code)."""

    def in_loop(self, i: int) -> bool | None:
        """Whether frame ``i``'s call to the frame above it (``i - 1``) is made inside a loop of
        the function holding that call; None when that cannot be told."""


def service_loop(functions: Sequence[str], calls: CallSites) -> str:
    """Rule 6: the waiter when it waits inside a loop of its own (not inlined, or that loop
    could be its caller's) and every frame under it, down to the goroutine's start, calls on
    from outside any loop; "" otherwise (a cut stack, an unknown loop structure).

    The main goroutine's waiter needs no loop of its own: ``main.main`` calling ``run``, which
    starts everything and then waits once for a signal or a fatal error (Alertmanager's
    ``main.run``), is rule 5's "main goroutine waiting for a signal" one call deeper."""
    w = next((i for i, f in enumerate(functions) if not f.startswith(WAIT_PRIMITIVES)), None)
    if w is None or calls.inlined(w):
        return ""
    waits_in_loop = calls.in_loop(w)
    if waits_in_loop is None or (not waits_in_loop and functions[-2:-1] != ["runtime.main"]):
        return ""
    for i in range(w + 1, len(functions)):
        if functions[i].startswith(START_SKIP):
            return functions[w]
        if calls.in_loop(i) is not False:
            return ""
    return ""


def waiter_of(functions: Sequence[str]) -> str:
    """The innermost frame that is not a wait primitive: the code that asked to wait."""
    for f in functions:
        if not f.startswith(WAIT_PRIMITIVES):
            return f
    return ""


def _functions(binary) -> Iterable[tuple[str, int, int]]:
    """``(name, lo, hi)`` of every function of ``binary``: .symtab when present, else pclntab."""
    syms = binary.elf.symbols()
    funcs = [(n, s.value, s.value + s.size) for n, s in syms.items() if s.kind == "func" and s.size]
    if funcs:
        return funcs
    return [(n, lo, hi) for n, (lo, hi) in binary.pcln_spans.items()]


_PATTERN_START = re.compile(r"^[A-Za-z0-9_\-./~]+\.")


@dataclass
class IdleOptions:
    """``[idle]`` in plugins.toml: what lgf counts as an idle wait beyond its defaults.

    ::

        [idle]
        idle_sites = ["myapp.(*Poller).wait*", "myapp/queue.(*Consumer).next"]
        report_idle = false      # true: idle waits become events too (verdict = "idle"), never alerts
        use_default_sites = true # false: only your idle_sites (the request and loop-head rules stay)
    """

    idle_sites: list[str] = field(default_factory=list)
    """fnmatch patterns on Go function names (``pkg/path.(*Type).Method``): a parked goroutine
    with a matching frame, and no request handler frame, waits for work."""
    report_idle: bool = False
    """Send idle waits over the threshold as events with ``verdict = "idle"`` (sinks receiving
    events see them; alerts never count them, and they never arm the goroutine tier)."""
    use_default_sites: bool = True
    """Keep lgf's own idle sites (``lgf.idle.DEFAULT_IDLE_SITES``)."""

    def __post_init__(self):
        for i, pattern in enumerate(self.idle_sites):
            if not pattern or pattern != pattern.strip() or not _PATTERN_START.match(pattern):
                raise ValueError(f"idle_sites[{i}]: {pattern!r} must start with a package path and a dot "
                                 "(e.g. \"myapp.(*Poller).wait*\"): a pattern matching any package would "
                                 "make every goroutine idle and blind lgf")
        self._rules: IdleRules | None = None

    def rules(self) -> IdleRules:
        """The :class:`IdleRules` these options make (built once)."""
        if self._rules is None:
            self._rules = IdleRules(self.idle_sites, use_defaults=self.use_default_sites)
        return self._rules


def options_of(config) -> IdleOptions:
    """The ``[idle]`` options of a validated config (fresh defaults when it has none)."""
    sections = getattr(config, "sections", None) or {}
    got = sections.get("idle")
    return got if isinstance(got, IdleOptions) else IdleOptions()


def rules_of(config) -> IdleRules:
    """The :class:`IdleRules` of a validated config: what every tier of a host judges with (the
    host makes them once, ``lgf.services.Services.for_config``, and hands them over)."""
    return options_of(config).rules()
