"""Helpers shared by the durable-delivery and WeCom tests (test_delivery, test_wecom*).

Only what those files did the same way: fill a queue and let it drain (waiting with
``support.wait``), read alert ids back out of the messages the fake robot got, and
count the most messages in any minute.
"""

from __future__ import annotations

from collections.abc import Iterable

from support.wait import wait_until

ID_LENGTH = 32
"""An event id is 32 hex digits (``uuid4().hex``); no other word in a WeCom message is that long."""


def deliver_all(queue, events: Iterable) -> None:
    """Queue ``events`` on ``queue`` (a ``Delivery``), start its worker, wait until nothing is pending.

    Items the sink marked failed are not pending: this returns once each item was delivered or
    set aside. The queue is left running; the test stops it.
    """
    for ev in events:
        queue.put(ev)
    queue.start()
    wait_until(lambda: queue.depth() == 0)


def ids_in(messages) -> list[str]:
    """Every alert id in the contents of ``messages`` (fakewecom ``Received``), repeats included."""
    return [word for m in messages for word in m.content.split() if len(word) == ID_LENGTH]


def max_in_any_minute(times: list[float]) -> int:
    """The most of ``times`` (seconds) that fall in any 60-second window: WeCom allows 20."""
    times = sorted(times)
    return max((sum(1 for u in times if t <= u < t + 60.0) for t in times), default=0)
