"""Small helpers shared by tests: run the real `lgf` command, write configs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

LGF = [sys.executable, "-m", "lgf.cli"]


def lgf(*args: str, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    """Run the installed `lgf` command as a user would; returns the completed process."""
    return subprocess.run([*LGF, *args], capture_output=True, text=True, timeout=timeout, **kw)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path
