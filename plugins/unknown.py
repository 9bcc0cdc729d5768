"""The fallback classifier: answers ``"unknown"`` when no other classifier did.

Registered as a plugin module, always on. It is a ``wrapper=True`` implementation rather than a
``trylast`` one: pluggy calls ``trylast`` implementations most-recently-registered *last*, so a
``trylast`` fallback registered at start-up would run before the built-in ``waitreason`` instance
(also ``trylast``, registered later at build). As a wrapper it sees the answer of every other
classifier and only fills in ``"unknown"`` when there is none, so any classifier, built-in or
third-party, overrides it just by answering (pytest's ``pytest_report_teststatus`` habit).
Cost: one generator step per event, or per batch (``lgf_classify_batch``).
"""

from __future__ import annotations

from lgf import hookimpl


@hookimpl(wrapper=True, trylast=True)
def lgf_classify(event):
    cause = yield
    return cause if cause is not None else "unknown"


@hookimpl(wrapper=True, trylast=True)
def lgf_classify_batch(events):
    """The same per batch (lgf.hookspecs): every event no classifier decided is ``"unknown"``."""
    yield
    for event in events:
        if not event.cause:
            event.cause = "unknown"
