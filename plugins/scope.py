"""The ``scope`` step: every stall event says whether it is a stall or an idle wait, and what
unit of work it belongs to, by the one rule of :mod:`lgf.idle`.

Built in and always on (``lgf.manager.BUILTIN_PLUGINS``), ``trylast`` among enrichers so the
symbolizer has filled ``event.stack`` when there is one (else the PCs are symbolized here).

- An event that already carries ``extra["verdict"]`` was judged where it was made (the sampler
  judges every park it reports; the goroutine tier may decide in the kernel) and is left alone.
- Any other goroutine event is judged from its stack and wait reason: ``extra["verdict"]``,
  ``extra["decided_by"]``, ``extra["stack_cut"]`` and ``event.scope``. Only a park can be idle:
  scheduling latency, GC stops and assists and syscalls keep runnable work from running, and
  are always stalls (their scope is still given).
- A request-scoped event that carries the ``*http.Request`` address the goroutine tier recorded
  (``extra["http_request_addr"]``) gets ``http_method`` and ``http_path`` read from the live
  process (:mod:`lgf.golang.httpreq`); when they cannot be read they stay empty and
  ``extra["http_request_unread"]`` says why.
- An idle wait is held back (``extra["held_back"]``): the pipeline counts it in
  ``lgf_idle_waits_total{source,site}`` and sends it nowhere, unless ``[idle] report_idle =
  true``; even then it never joins an alert.

Cost: a few string matches per frame (cached per function name) per event; the request's
strings are two or three small reads of the target's memory.
"""

from __future__ import annotations

import os

from lgf import hookimpl
from lgf.golang.runtime_reader import Readers, Unreadable
from lgf.golang.symbols import Symbolizers
from lgf.idle import IdleOptions, Verdict, options_of

_state: dict = {"options": IdleOptions(), "readers": None, "symbolizers": None}


@hookimpl
def lgf_configure(config) -> None:
    _state["options"] = options_of(config)


@hookimpl(trylast=True)
def lgf_enrich(event) -> None:
    if event.kind != "stall":
        return
    options: IdleOptions = _state["options"]
    if "verdict" not in event.extra:
        verdict = judge(event, options)
        event.extra.update(verdict.as_extra())
        event.scope = verdict.scope
    if event.scope == "request" and not event.http_method and event.extra.get("http_request_addr"):
        _read_request(event)
    if event.extra.get("verdict") == "idle" and not options.report_idle:
        event.extra["held_back"] = "idle"


def judge(event, options: IdleOptions) -> Verdict:
    """The verdict on one event (see the module docstring)."""
    if not event.goid or not (event.pcs or event.stack):
        return Verdict("stall", "", "")
    names = functions_of(event)
    verdict = options.rules().judge(names, event.wait_reason)
    if verdict.idle and event.extra.get("stall", "park") != "park":
        return Verdict("stall", verdict.scope, "", verdict.cut)
    return verdict


def functions_of(event) -> list[str]:
    """Function names of the event's stack, innermost first (symbolized here if no enricher did)."""
    if event.stack:
        return [f.get("func", "") for f in event.stack]
    path = event.exe if event.exe and os.path.exists(event.exe) else f"/proc/{event.pid}/exe"
    if _state["symbolizers"] is None:
        _state["symbolizers"] = Symbolizers(max_open=16)
    try:
        sym = _state["symbolizers"].get(path)
        bias = int(event.extra.get("load_bias", 0) or 0)
        return [f.func for pc in event.pcs for f in sym.frames(int(pc) - bias)]
    except Exception:  # noqa: BLE001 - an unreadable binary: no names, judged as a cut stack
        return []


def _read_request(event) -> None:
    from lgf.golang.httpreq import UnknownLayout, read_method_path

    if _state["readers"] is None:
        _state["readers"] = Readers()
    try:
        reader = _state["readers"].get(event.pid, event.build_id)
        event.http_method, event.http_path = read_method_path(
            reader, reader.binary, int(event.extra["http_request_addr"]))
    except Unreadable as exc:
        event.extra["http_request_unread"] = str(exc)
    except UnknownLayout:
        event.extra["http_request_unread"] = "unknown_layout"


@hookimpl
def lgf_unconfigure() -> None:
    for key in ("readers", "symbolizers"):
        obj = _state[key]
        if obj is not None:
            if hasattr(obj, "close"):
                obj.close()
            _state[key] = None
