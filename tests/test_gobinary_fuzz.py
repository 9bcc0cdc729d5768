"""Hostile input: lgf runs as root over other people's binaries, so a corrupted or truncated ELF
must give TargetRefused (or, if the damage is harmless, facts), never another exception or a hang.

Bounded hypothesis runs mutate the bytes every parser here reads: ELF and program headers,
section headers, notes, build info, pclntab header, symbol table, DWARF, and the prologue bytes.
"""

from __future__ import annotations

import signal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lgf.errors import TargetRefused
from lgf.golang.gobinary import GoBinary
from lgf.golang.goelf import ElfImage
from support.binfacts import binfacts

HANG_GUARD_SECONDS = 600
"""Not a speed limit: a whole bounded run takes seconds; this only turns a hang into a failure."""


def regions(data: bytes) -> list[tuple[int, int]]:
    """(start, length) of the byte ranges the parsers read, found in the intact file."""
    elf = ElfImage(data)
    shoff = int.from_bytes(data[0x28:0x30], "little")
    out = [(0, 64), (64, 56 * 8), (shoff, 64 * len(elf.sections) + 64)]
    for name in (".note.go.buildid", ".note.gnu.build-id", ".go.buildinfo", ".gopclntab", ".symtab",
                 ".strtab", ".debug_info", ".debug_abbrev", ".data"):
        sec = elf.sections.get(name)
        if sec is not None and sec.has_file_bytes:
            out.append((sec.offset, min(sec.size, 512)))
    gb = GoBinary(data)
    entry = gb.file_offset(gb.func_addr("runtime.gopark"))
    out.append((entry, 32))
    return [(s, n) for s, n in out if 0 <= s < len(data) and n > 0]


def mutations(data: bytes):
    spots = regions(data)
    one = st.tuples(st.sampled_from(spots), st.integers(0, 1 << 20), st.integers(0, 255)).map(
        lambda t: (t[0][0] + t[1] % t[0][1], t[2]))
    cut = st.one_of(st.none(), st.none(), st.none(), st.integers(0, len(data)))  # mostly whole files
    return st.tuples(st.lists(one, min_size=1, max_size=8), cut)


def apply(data: bytes, changes) -> bytes:
    edits, cut = changes
    buf = bytearray(data)
    for pos, value in edits:
        if pos < len(buf):
            buf[pos] = value
    return bytes(buf[:cut] if cut is not None else buf)


def check(data: bytes) -> None:
    try:
        gb = GoBinary(data)
        gb.facts()
    except TargetRefused as exc:
        assert str(exc).startswith("<bytes>: ")


@pytest.fixture
def hang_guard():
    def on_alarm(signum, frame):
        raise TimeoutError(f"a fuzz run took over {HANG_GUARD_SECONDS} s: a parser hangs")
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(HANG_GUARD_SECONDS)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def fuzz(base: bytes, examples: int) -> None:
    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(mutations(base))
    def run(changes):
        check(apply(base, changes))
    run()


def test_corrupted_stripped_binary_refuses_cleanly(go_toolchains, hang_guard):
    fuzz(binfacts("1.25.5", "sw").read_bytes(), examples=300)


def test_corrupted_binary_with_symbols_and_dwarf_refuses_cleanly(go_toolchains, hang_guard):
    fuzz(binfacts("1.21.13", "plain").read_bytes(), examples=60)


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(st.binary(max_size=4096))
def test_random_bytes_are_refused(blob):
    with pytest.raises(TargetRefused):
        GoBinary(b"\x7fELF" + blob)
