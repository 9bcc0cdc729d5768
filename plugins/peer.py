"""The ``peer`` enricher: what the stalled goroutine waited on, and whom it was serving.

plugins.toml::

    [[enrichers]]
    use = "peer"
    owners = true          # name the process at the other end when it runs on this host

Fills, on a stall event (and so on its alert, whose example it is):

- ``waited_on``: for a goroutine parked inside an HTTP client round trip (net/http's
  ``Transport``: ``http.Client``, ``httputil.ReverseProxy``...), ``{"kind": "http", "addr":
  "host:port", "scheme", "local", "peer"}``: the upstream as the Transport dialled it and the
  connection's two ends (over HTTP/2, ``"protocol": "h2"`` and the TLS server name with the
  socket's port); for a goroutine in "IO wait", ``{"kind": "tcp", "addr", "local",
  "peer", "fd", "mode"}`` (``"unix"`` / ``"fd"`` with the descriptor only, for other files);
- ``caller``: for a goroutine serving an HTTP/1.x request, ``{"addr": "ip:port", "local"}``, the
  client's connection;
- in each, when the other end is a process on this host (the socket's other end, or the server
  listening on the peer's port, found in ``/proc``: :mod:`lgf.golang.netpeer`), its ``pid``,
  ``comm`` and ``exe``; the alert policy adds its ``service`` (named as lgf names every service,
  ``[alerts] services`` first) and derives ``topology.path``: ``[alerts.topology] path``, then the
  caller, this service, and the hop it waited on (``lgf.alerts``).

Where it comes from: the goroutine sampler reads it while the stalled goroutine is still parked
(:mod:`lgf.golang.peercapture`, which this enricher switches on; the module docstrings of
:mod:`lgf.golang.pollwait` and :mod:`lgf.golang.httpclient` say how and why that way); this
enricher only takes what was kept for the event and looks up the processes. A stall the sampler
never saw parked (while the goroutine tier is armed it sees parks begin and end itself, and
reports them once the frames are gone: with ``goroutine_tier = "always"``, every stall), a wait on
anything else, or a value that could not be read leaves the fields out, counted in ``lgf_enrich_missing_total{enricher="peer",value,reason}``.
Nothing is guessed.

Cost (bench/bench_peer.py, lgf's CPU): in the sampler, per stall, while parked: 0.25-0.3 ms
(frames, a few candidate reads, ``pidfd_getfd`` and two socket calls per connection); here, per
event: about 0.15 ms with the owners cached (a ``sock_diag`` look-up per end), and per socket not
seen before one read of every process's descriptor links (4.5 ms with 100 processes). The target
pays nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from lgf import Component, hookimpl
from lgf.golang.netpeer import SocketOwners, other_end, process_names
from lgf.hookcall import for_each


@dataclass
class PeerOptions:
    owners: bool = True
    """Name the process at the other end of a connection when it runs on this host (its pid,
    comm, exe; the alert policy adds its service name). Costs one scan of ``/proc/*/fd`` per
    socket not seen before."""


class PeerEnricher:
    name = "peer"
    Options = PeerOptions

    def __init__(self, options: PeerOptions | None, ctx):
        self.options = options or PeerOptions()
        self.stats = getattr(ctx, "stats", None)
        self._capture = ctx.services.peer_capture
        self._capture.enable()
        self.owners = SocketOwners()

    @hookimpl
    def lgf_unconfigure(self) -> None:
        self._capture.disable()

    @hookimpl
    def lgf_enrich(self, event) -> None:
        if event.kind != "stall" or not event.pid or "waited_on" in event.extra:
            return
        facts = self._capture.take(event.pid, event.goid, event.start_ns, event.end_ns or event.start_ns)
        if facts is None:
            self._missing("all", "not_captured")
            return
        for key in ("waited_on", "caller"):
            if key in facts:
                event.extra[key] = self._described(dict(facts[key]), event.pid)

    @hookimpl
    def lgf_enrich_batch(self, events) -> None:
        """``lgf_enrich`` of each event: one call per batch, so that the pipeline keeps its batch
        path with this enricher configured (lgf.hookspecs)."""
        for_each(events, self.lgf_enrich)

    def _described(self, end: dict, pid: int) -> dict:
        """``end`` with the process at its other end when it runs on this host (the other end's
        socket, else the server listening on the peer's port), without the socket's inode."""
        end.pop("inode", None)
        if not self.options.owners or not end.get("local") or not end.get("peer"):
            return end
        mirror, listener = other_end(pid, end["local"], end["peer"])
        owner = self.owners.owner_of(mirror) if mirror else None
        if owner is None and listener:
            owner = self.owners.owner_of(listener)
        if owner is None:
            self._missing("owner", "not_on_this_host" if not (mirror or listener) else "gone")
            return end
        end["pid"] = owner
        end["comm"], end["exe"] = process_names(owner)
        if owner == pid:
            end["self"] = True
        return end

    def _missing(self, value: str, reason: str) -> None:
        if self.stats is not None:
            self.stats.inc("lgf_enrich_missing_total", enricher=self.name, value=value, reason=reason)


@hookimpl
def lgf_components():
    return [Component("enricher", "peer", PeerEnricher, PeerOptions,
                      doc="what the stalled goroutine waited on (upstream, connection) and whom it served")]


