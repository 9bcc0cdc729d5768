"""One incident, one story: which alert group a stall joins when it belongs to a request.

Why: one slow request makes several goroutines wait (the handler's ``select`` on the HTTP
transport, a lock the handler takes, ...). Grouped by cause and top frame, as other stalls are,
they would make as many alerts. A stall whose goroutine serves a request (``event.scope ==
"request"``, see :mod:`lgf.idle`) is grouped by the request instead: service, method and path
when they are known, else the request handler's own function (the first user frame of the
stack), so all the waits of one kind of slow request make one alert, whose example is the
request goroutine's worst wait. Other stalls keep ``[alerts] group_by``.

The transport goroutines' own reads of the upstream are idle sites (the caller waits in
``RoundTrip`` as long as they do), so they never split the story.

Cost: a tuple per stall.
"""

from __future__ import annotations


def incident_key(event, service: str, top_frame: str, groups: dict | None = None) -> tuple | None:
    """The alert group key of a request-scoped stall, or None to use ``group_by``.

    ``groups``: the alert engine's open groups by key. The first stall of an episode is often
    the sampler's, reported before the request could be read (no method, no path): it opens a
    group keyed by its top frame. The first stall of the same kind *with* method and path adopts
    that group (it is re-keyed in ``groups``), so one story stays one alert.
    """
    if event.scope != "request":
        return None
    unnamed = ("request", service, "", "", top_frame)
    if not (event.http_path or event.http_method):
        return unnamed
    named = ("request", service, event.http_method, event.http_path)
    if groups is not None and named not in groups and unnamed in groups:
        group = groups[named] = groups.pop(unnamed)
        group.key = named
    return named


def describe_key(key: tuple, group_by: list[str]) -> dict:
    """The ``group_by`` an alert shows: field -> value of its group key."""
    if key and key[0] == "request":
        names = ("scope", "service", "http_method", "http_path", "top_frame")
        return {n: str(v) for n, v in zip(names, key, strict=False) if v}
    return dict(zip(group_by, map(str, key), strict=False))
