"""``lgf reload CONFIG``: make the running lgf re-read its config (what SIGHUP does); see lgf.reload."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time

HELP = "make the running lgf re-read its config, keeping what did not change"
DESCRIPTION = (HELP + ".\n\nChecks CONFIG first (an invalid one is reported as `lgf check` does and the running "
               "lgf is not disturbed), finds the running lgf through <spool_dir>/lgf.pid, sends it SIGHUP "
               "and prints what it kept and swapped, or why it refused. lgf re-reads the file it was "
               "started with: edit that one.")
EPILOG = "exit: 0 applied; 1 no running lgf or no answer; 2 the config was refused"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for lgf's answer")


def run(args: argparse.Namespace) -> int:
    from lgf import reload
    from lgf.run import load

    _, config = load(args.config)  # ConfigErrors -> printed as by `lgf check`, exit 2
    spool = config.host.spool_dir
    try:
        pid = int(reload.pid_path(spool).read_text().strip())
    except (OSError, ValueError):
        print(f"lgf: reload: no running lgf found ({reload.pid_path(spool)} is missing); "
              "is lgf running with this config's spool_dir?", file=sys.stderr)
        return 1
    status = reload.status_path(spool)
    before = _status(status)
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        print(f"lgf: reload: pid {pid} (from {reload.pid_path(spool)}) is not running", file=sys.stderr)
        return 1
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        now = _status(status)
        if now and now != before and now.get("pid") == pid:
            return _report(now)
        time.sleep(0.1)
    print(f"lgf: reload: no answer from pid {pid} within {args.timeout:.0f} s (see its log)", file=sys.stderr)
    return 1


def _status(path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _report(status: dict) -> int:
    if status["ok"]:
        print("lgf: reload: applied; kept: " + (", ".join(status["kept"]) or "nothing")
              + "; swapped: " + (", ".join(status["swapped"]) or "nothing"))
        for note in status.get("notes", []):
            print(f"  {note}")
        return 0
    print(f"lgf: reload refused; the running config stays. {len(status['errors'])} problem(s) in the config:",
          file=sys.stderr)
    for err in status["errors"]:
        print(f"  {err}", file=sys.stderr)
    return 2
