"""A Go program's service name when the config names none: its main module's last path element.

``[alerts] services`` maps names by regular expression; a process no pattern matches used to be
named by its comm (15 bytes, often a shell wrapper's or truncated). The binary knows better: its
build info names the main module (``github.com/acme/checkout`` -> ``checkout``); a trailing major
version element is skipped (``github.com/acme/checkout/v2`` -> ``checkout``). A binary without a
module path (``go build main.go`` records ``command-line-arguments``), or one lgf cannot read,
falls back to the comm.

The binary is read as :func:`lgf.golang.procfs.process_binary` finds it: the running file even
when it was deleted or replaced since, or lies in another mount namespace (a container).

Cost: the binary is parsed once (``open_binary`` caches it by file); the alert policy keeps each
process's name (``AlertEngine.service_of``), so this runs once per process and executable.
"""

from __future__ import annotations

import re

from lgf.errors import TargetRefused

from .gobinary import open_binary
from .procfs import DELETED, process_binary

_MAJOR = re.compile(r"v[0-9]+")
NO_MODULE = ("", "command-line-arguments")


def name_of_module(module_path: str) -> str:
    """``"lgf.test/tracehttp"`` -> ``"tracehttp"``; ``"example.com/x/v3"`` -> ``"x"``; "" if none."""
    if module_path in NO_MODULE:
        return ""
    parts = [p for p in module_path.split("/") if p]
    while len(parts) > 1 and _MAJOR.fullmatch(parts[-1]):
        parts.pop()
    return parts[-1] if parts else ""


def default_service(pid: int, exe: str, comm: str) -> str:
    """The service name of a process the config does not name: its main module's name, else comm."""
    path = process_binary(pid, exe) if pid else (exe if exe and not exe.endswith(DELETED) else None)
    if not path:
        return comm
    try:
        binary = open_binary(path)
        name = name_of_module(binary.info.module_path or binary.info.path)
    except (TargetRefused, OSError):
        name = ""
    return name or comm
