"""The latency page: ``/ui`` (and ``/debug/latency`` asked for ``text/html``), drawn by lgf itself.

A browser on the operator's side is all it needs: the page is HTML with inline SVG made on the
server for each request, no script, no font, nothing fetched from anywhere (lgf runs on hosts
with no internet, and the page must not become a way out). ``history`` keeps the recent stalls
the page draws; ``page`` renders them with the alert engine's windows, alerts and silences.
"""

from .history import StallHistory
from .page import render_page

__all__ = ["StallHistory", "render_page"]
