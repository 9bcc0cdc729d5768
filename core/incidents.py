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


def incident_key(event, service: str, top_frame: str, open_keys=()) -> tuple | None:
    """The alert group key of a request-scoped stall, or None to use ``group_by``.

    ``open_keys``: the keys of the groups open now. A request whose method and path are known
    joins the open group of the same handler frame whose first stall had none (the sampler's
    report of the episode's first stall, made before the request could be read), rather than
    opening a second alert for the same story.
    """
    if event.scope != "request":
        return None
    unnamed = ("request", service, "", "", top_frame)
    if not (event.http_path or event.http_method):
        return unnamed
    named = ("request", service, event.http_method, event.http_path)
    return unnamed if named not in open_keys and unnamed in open_keys else named
