"""``lgf inspect PID|BINARY [--json]``: what lgf knows about a Go binary, and why it would refuse it.

Prints the Go version, build ids, PIE or not, stripped or not, where each probe would go (function,
address, offset past the stack check, file offset, the decoded instruction, RET sites), the struct
offsets and where they came from (DWARF or the per-version table), the wait-reason table, and the
runtime globals the enrichers read. For a PID it also gives the process's load bias and its
identity as events carry it (``lgf.identity``: own pid, container, pod, OpenTelemetry naming). A refused
binary prints one line saying why and exits 1, so scripts can check a deployment before tracing.

Exit codes: 0 facts printed; 1 refused (not Go, unknown layout, corrupt, no such process); 2 usage.
"""

from __future__ import annotations

import argparse
import json
import sys

from lgf.errors import TargetRefused
from lgf.golang import discovery
from lgf.golang.gobinary import GoBinary, open_binary
from lgf.identity import FIELDS as identity_fields
from lgf.identity import read_identity

EXAMPLES = """examples:
  lgf inspect 4242                  # the running process 4242
  lgf inspect ./server --json       # a binary on disk, as JSON
  lgf inspect ./server -f main.handle   # also where a probe on main.handle would go
"""


HELP = "what lgf knows about a Go binary or process"
DESCRIPTION = __doc__.splitlines()[0]
EPILOG = EXAMPLES


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", help="a process id, or the path of a Go executable")
    p.add_argument("--json", action="store_true", help="print the facts as one JSON object")
    p.add_argument("-f", "--function", action="append", default=[], metavar="NAME",
                   help="also show the probe site of this function (repeatable)")


def resolve(target: str) -> tuple[GoBinary, dict]:
    """The binary to inspect and, for a pid, facts about the process. Raises TargetRefused."""
    if not target.isdigit():
        return open_binary(target), {}
    pid = int(target)
    exe = discovery.read_exe(pid)
    proc = discovery.read_proc(pid, exe) if exe else None
    if proc is None:
        raise TargetRefused(f"pid {pid}: no such process, or its executable cannot be read")
    path = discovery.openable_path(proc)
    try:
        gb = open_binary(path)
    except TargetRefused as exc:
        raise TargetRefused(f"pid {pid} ({exe}): {str(exc).removeprefix(path + ': ')}") from None
    ident = read_identity(pid, exe)
    return gb, {"pid": pid, "exe": exe, "comm": proc.comm, "load_bias": gb.load_bias(pid),
                "read_from": path, **ident.fields(), "tags": ident.tags()}


def render(facts: dict) -> str:
    """The facts as text a person reads top to bottom."""
    out = []
    if "process" in facts:
        pr = facts["process"]
        out.append(f"process      pid {pr['pid']} ({pr['comm']}) running {pr['exe']}, "
                   f"load bias {pr['load_bias']:#x}")
        who = ([f"{k} {pr[k]}" for k in ("ns_pid", *identity_fields) if pr.get(k)]
               + [f"{k} {v}" for k, v in (pr.get("tags") or {}).items()])
        out.append("identity     " + (", ".join(who) or "-"))
    out += [
        f"binary       {facts['path']}",
        f"go           {facts['go_version']}   module {facts['module_path'] or '-'}",
        f"build id     {facts['build_id'] or '-'}",
        f"gnu build id {facts['gnu_build_id'] or '-'}",
        f"pie          {'yes' if facts['is_pie'] else 'no'}   stripped (no .symtab) "
        f"{'yes' if facts['stripped'] else 'no'}   dwarf {'yes' if facts['has_dwarf'] else 'no'}",
        "",
        "probes (offset = where the kernel emulates the hit instead of single-stepping it: the push %rbp"
        " after the stack-bound check; in Go 1.19, the jbe to morestack before the sub $N,%rsp)",
    ]
    for row in facts["probes"]:
        if "error" in row:
            addr = f"{row['addr']:#x}" if row.get("addr") is not None else "-"
            out.append(f"  {row['function']:<34} {addr:>10}  not probed: {row['error']}")
            continue
        rets = ",".join(f"+{r}" for r in row["ret_offsets"] or []) or "-"
        out.append(f"  {row['function']:<34} {row['addr']:#10x} +{row['offset']:<3} file {row['file_offset']:#x}"
                   f"  {row['instruction']:<12} ret at {rets}")
    out += ["", f"struct offsets (from {facts['offset_source']})"]
    by_struct: dict[str, list[str]] = {}
    for key, off in facts["field_offsets"].items():
        struct, field = key.split(".", 1)
        by_struct.setdefault(struct, []).append(f"{field}={off}")
    for struct, fields in by_struct.items():
        out.append(f"  {struct:<9} " + " ".join(fields))
    out += ["", f"wait reasons (from {facts['wait_reasons_source']}): {len(facts['wait_reasons'])}"]
    out += [f"  {i:>2} {text or '(zero)'}" for i, text in enumerate(facts["wait_reasons"])]
    out.append(f"stw reasons (from {facts['stw_reasons_source']}): {len(facts['stw_reasons'])}; "
               f"stw functions: {', '.join(facts['stw_functions']) or '-'}")
    out += ["", "runtime globals (from the symbol table, or when stripped from the runtime code using them)"]
    for name, addr in facts["symbols"].items():
        where = facts["symbols_source"][name]
        out.append(f"  {name:<24} " + (f"{addr:#x} ({where})" if addr is not None else "- (not found)"))
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    try:
        gb, process = resolve(args.target)
        facts = gb.facts()
        if args.function:
            facts["probes"] += gb.probe_plan(args.function)
    except TargetRefused as exc:
        if args.json:
            print(json.dumps({"refused": str(exc)}))
        else:
            print(f"lgf inspect: refused: {exc}", file=sys.stderr)
        return 1
    if process:
        facts["process"] = process
    if args.json:
        print(json.dumps(facts, indent=2))
    else:
        print(render(facts))
    return 0

