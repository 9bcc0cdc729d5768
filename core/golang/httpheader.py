"""Headers of a net/http server request, read from outside the process.

The request is an ``*http.Request``; its ``Header`` field (``http.Header``, a
``map[string][]string``) sits at byte 56 in every Go release lgf supports: ``Method string`` (0),
``URL *url.URL`` (16), ``Proto string`` (24), ``ProtoMajor``/``ProtoMinor int`` (40, 48), then
``Header`` (checked against DWARF for every toolchain the tests build). Keys are in canonical form
(``textproto.CanonicalMIMEHeaderKey``: ``traceparent`` arrives as ``Traceparent``), so lookups
here canonicalise the names asked for the same way.

Where the request address comes from: the uprobe source's goroutine tier records the request each
goroutine is serving (``extra["http_request_addr"]``). The map is read with only the wanted keys
decoded (:mod:`lgf.golang.gomap`), so a request with many headers costs the same few reads.
"""

from __future__ import annotations

import struct

from lgf.golang.gomap import map_layout, read_strings_map

REQUEST_HEADER_OFFSET = 56
"""``offsetof(http.Request, Header)`` on amd64, Go 1.19 and 1.21 to 1.27 (1.19.8's DWARF says 56 too)."""
MAX_HEADERS = 1024
MAX_VALUE = 8192


def canonical_key(name: str) -> str:
    """``"traceparent"`` -> ``"Traceparent"``, ``"x-b3-traceid"`` -> ``"X-B3-Traceid"``, as Go does."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


def read_request_headers(mem, binary, req_addr: int, names: list[str]) -> dict[str, list[str]]:
    """``{canonical name: values}`` of the headers ``names`` (absent ones left out) of the
    ``*http.Request`` at ``req_addr``. Raises ``Unreadable`` or ``UnknownMapLayout``."""
    (header_map,) = struct.unpack("<Q", mem.read(req_addr + REQUEST_HEADER_OFFSET, 8))
    return read_strings_map(mem, map_layout(binary), header_map, [canonical_key(n) for n in names],
                            max_entries=MAX_HEADERS, max_string=MAX_VALUE)
