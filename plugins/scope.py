"""The ``scope`` step: every stall event says whether it is a stall or an idle wait, and what
unit of work it belongs to, by the one rule of :mod:`lgf.idle`.

Built in and always on: the module is a built-in plugin (``lgf.manager.BUILTIN_PLUGINS``, listed
by ``lgf plugins`` like any other) that provides the ``scope`` enricher with ``always=True``
(``lgf.Component``), so every host makes one :class:`ScopeEnricher` of its own, with its own
``ctx``, registered as ``lgf.plugins.scope:scope``, whatever its config says (a ``[[enrichers]] use = "scope"`` table is an error). Its
``lgf_enrich`` is ``trylast`` among enrichers so the symbolizer has filled ``event.stack`` when
there is one (else the PCs are symbolized here, with the host's shared symbol cache).

- An event that already carries ``extra["verdict"]`` was judged where it was made (the sampler
  judges every park it reports; the goroutine tier may decide in the kernel) and is left alone.
- Any other goroutine event is judged from its stack and wait reason with the host's
  ``[idle]`` rules (``ctx.services.judge``, the one place a stack is symbolized then judged):
  ``extra["verdict"]``, ``extra["decided_by"]``, ``extra["stack_cut"]`` and ``event.scope``.
  Only a park can be idle: scheduling latency, GC stops and assists and syscalls keep runnable
  work from running, and are always stalls (their scope is still given).
- A request-scoped event that carries the ``*http.Request`` address the goroutine tier recorded
  (``extra["http_request_addr"]``) gets ``http_method`` and ``http_path`` read from the live
  process (:mod:`lgf.golang.httpreq`); when they cannot be read they stay empty and
  ``extra["http_request_unread"]`` says why.
- What becomes of an idle wait is the pipeline's rule (``lgf.pipeline``): counted in
  ``lgf_idle_waits_total{source,site}`` and sent nowhere, unless ``[idle] report_idle = true``;
  even then it never joins an alert.

Cost: a few string matches per frame (cached per function name) per event; the request's
strings are two or three small reads of the target's memory. A process whose binary cannot be
read (gone, or a recording's pid replayed on another host) is not looked for again for
``UNREADABLE_RETRY_S``: 100,000 replayed stalls of 50 such processes cost 3 stats and a failed
symbol look-up each before (a quarter of bench/bench_pipeline.py's pipeline time), 50 now.
"""

from __future__ import annotations

import time

from lgf import Component, hookimpl
from lgf.golang.httpreq import UnknownLayout, read_method_path
from lgf.golang.runtime_reader import Readers, Unreadable
from lgf.hookcall import for_each
from lgf.idle import Verdict
from lgf.services import Services

CUT_STACK = Verdict("stall", "", "", cut=True)
"""The verdict on a stack whose binary cannot be read (made once: a storm of such stalls each
made one)."""
UNREADABLE_RETRY_S = 5.0
"""How long a process whose binary could not be read is judged without trying again."""
UNREADABLE_KEPT = 4096
"""Processes remembered as unreadable at most (forgotten all at once past it)."""


class ScopeEnricher:
    """The per-host ``scope`` step (see the module docstring)."""

    def __init__(self, options: None, ctx) -> None:
        self.services: Services = ctx.services
        self._readers: Readers | None = None
        """Readers of live processes, for the request's method and path; made on first use."""
        self._unreadable: dict[tuple[int, str], float] = {}
        """(pid, exe) whose binary could not be read -> when to try again (monotonic seconds)."""

    @hookimpl(trylast=True)
    def lgf_enrich(self, event) -> None:
        if event.kind != "stall":
            return
        if "verdict" not in event.extra:
            verdict = self.judge(event)
            event.extra.update(verdict.as_extra())
            event.scope = verdict.scope
        if event.scope == "request" and not event.http_method and event.extra.get("http_request_addr"):
            self._read_request(event)

    @hookimpl(trylast=True)
    def lgf_enrich_batch(self, events) -> None:
        """``lgf_enrich`` of each event: the pipeline's one call per batch (lgf.hookspecs). One
        event that raises does not cost the others their verdict: raised once they are judged.
        Events judged where they were made (the sampler's) cost a look at their verdict, here,
        not a call of ``lgf_enrich`` each."""
        for_each([e for e in events if e.kind == "stall" and (
            "verdict" not in e.extra or e.scope == "request")], self.lgf_enrich)

    def judge(self, event) -> Verdict:
        """The verdict on one event (see the module docstring)."""
        if not event.goid or not (event.pcs or event.stack):
            return Verdict("stall", "", "")
        if event.stack:  # symbolized by an enricher already
            verdict = self.services.idle_rules.judge(self.functions_of(event), event.wait_reason)
        else:
            verdict = self._judge_pcs(event)
        if verdict.idle and event.extra.get("stall", "park") != "park":
            return Verdict("stall", verdict.scope, "", verdict.cut)
        return verdict

    def _judge_pcs(self, event) -> Verdict:
        """The verdict on an unsymbolized stack; a cut stack, a stall, when the binary cannot be read."""
        process = (event.pid, event.exe)
        now = time.monotonic()
        if self._unreadable.get(process, 0.0) > now:
            return CUT_STACK
        bias = int(event.extra.get("load_bias", 0) or 0)
        path = self.services.binary_of(event.pid, event.exe)
        verdict = self.services.judge(path, event.pcs, event.wait_reason, bias) if path else None
        if verdict is not None:
            return verdict
        if len(self._unreadable) >= UNREADABLE_KEPT:
            self._unreadable.clear()
        self._unreadable[process] = now + UNREADABLE_RETRY_S
        return CUT_STACK

    def functions_of(self, event) -> list[str]:
        """Function names of the event's stack, innermost first (symbolized here, with the host's
        symbol cache, if no enricher did; [] when the binary cannot be read: a cut stack)."""
        if event.stack:
            return [f.get("func", "") for f in event.stack]
        bias = int(event.extra.get("load_bias", 0) or 0)
        path = self.services.binary_of(event.pid, event.exe)
        return (self.services.functions(path, event.pcs, bias) or []) if path else []

    def _read_request(self, event) -> None:
        if self._readers is None:
            self._readers = Readers()
        try:
            reader = self._readers.get(event.pid, event.build_id)
            event.http_method, event.http_path = read_method_path(
                reader, reader.binary, int(event.extra["http_request_addr"]))
        except Unreadable as exc:
            event.extra["http_request_unread"] = str(exc)
        except UnknownLayout:
            event.extra["http_request_unread"] = "unknown_layout"

    @hookimpl
    def lgf_unconfigure(self) -> None:
        if self._readers is not None:
            self._readers.close()
            self._readers = None


@hookimpl
def lgf_components():
    return [Component("enricher", "scope", ScopeEnricher, None, always=True,
                      doc="stall or idle wait, and the unit of work (lgf.idle); always on, one per host")]
