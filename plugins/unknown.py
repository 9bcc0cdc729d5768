"""The fallback classifier: answers ``"unknown"`` when no other classifier did.

Registered as a plugin module (a module-level ``@hookimpl``), always on, and ``trylast``: pluggy
calls it after every other ``lgf_classify`` implementation, so any classifier, built-in or
third-party, overrides it just by answering (pytest's ``pytest_report_teststatus`` habit).
Cost: nothing.
"""

from __future__ import annotations

from lgf import hookimpl


@hookimpl(trylast=True)
def lgf_classify(event):
    return "unknown"
