"""One copy of each number the BPF programs and Python share: ``lgf.bpf.constants``.

The C files must not define those names themselves (a stale copy would silently win over the -D
flag), must not use a shared-looking name Python does not pass, and the goroutine states must be
Go's own, in every toolchain the tests build with.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lgf.bpf import constants, loader
from lgf.golang import gstatus
from support.gobuild import GO_VERSIONS, goroot

ROOT = Path(__file__).resolve().parent.parent
C_FILES = sorted([*(ROOT / "sources").rglob("*.c"), *(ROOT / "core" / "bpf").glob("*.h")])
UPROBE_C = ROOT / "sources" / "uprobe" / "uprobe.c"
SHARED_NAME = re.compile(r"\b(STALL_[A-Z]+|C_[A-Z_]+|G_(?:RUNNABLE|WAITING|SCAN)|WAIT_SLOT_SHIFT_\d|WAIT_[A-Z]+"
                         r"|EV_[A-Z_]+|SITE_[A-Z]+|FROM_[A-Z_]+|FH_[A-Z]+|NO_REASON)\b")
"""Names of the families kept in lgf.bpf.constants: a C file using one must get it from there."""


@pytest.mark.parametrize("path", C_FILES, ids=lambda p: p.name)
def test_c_keeps_no_copy_of_a_shared_constant(path):
    text = path.read_text()
    for name in constants.shared():
        assert not re.search(rf"#\s*define\s+{name}\b", text), f"{path.name} defines {name} itself"
    code = re.sub(r"/\*.*?\*/|//[^\n]*", "", text, flags=re.S)  # names in comments are prose
    unknown = set(SHARED_NAME.findall(code)) - set(constants.shared())
    assert not unknown, f"{path.name} uses {sorted(unknown)}, which lgf.bpf.constants does not pass"


@pytest.mark.bpf
def test_a_program_compiles_with_only_the_constants_python_passes(bpf_ok):
    # tracepoint.c uses STALL_SYSCALL and C_RINGBUF_LOST and defines neither: it compiles only
    # because load() passes lgf.bpf.constants.shared() (uprobe.c is compiled by its own tests).
    bpf = loader.load(ROOT / "sources" / "tracepoint.c", {
        "THRESHOLD_NS": 50_000_000, "FSBASE_OFF": loader.fsbase_offset(), "MAX_FRAMES": 8,
        "RINGBUF_PAGES": 8})
    try:
        assert "#define STALL_SYSCALL 4\n" in loader.final_c(
            ROOT / "sources" / "tracepoint.c", {**constants.shared()})
    finally:
        bpf.cleanup()


def test_wait_slot_hash_is_the_one_uprobe_c_computes():
    c = UPROBE_C.read_text()
    body = c[c.index("wait_slot(u32 tgid, u64 g)"):]
    body = body[: body.index("}")]
    assert all(f"WAIT_SLOT_SHIFT_{i}" in body for i in range(3)), body
    a, b, s = constants.WAIT_SLOT_SHIFTS
    g, tgid = 0xC000123440, 4242
    assert constants.wait_slot_index(tgid, g, 1024) == ((g >> a) ^ (g >> b) ^ (tgid << s)) & 1023


def test_every_family_is_used_by_the_c_and_passed_by_python():
    # The families the regex above polices, each seen in the C (so a renamed family cannot slip past
    # the check) and each passed by shared().
    code = re.sub(r"/\*.*?\*/|//[^\n]*", "", UPROBE_C.read_text(), flags=re.S)
    used = set(SHARED_NAME.findall(code))
    for prefix in ("EV_", "SITE_", "FROM_", "FH_", "WAIT_PARK", "WAIT_RUNNABLE", "NO_REASON", "STALL_", "C_"):
        assert any(n.startswith(prefix) for n in used), f"uprobe.c uses no {prefix}* name"
    assert used <= set(constants.shared())


def test_python_decodes_with_the_same_numbers():
    from lgf.bpf import sites
    from lgf.sources.uprobe import runnable, verdict

    assert (sites.SITE_IDLE, sites.SITE_REQUEST) == (constants.SITE_IDLE, constants.SITE_REQUEST)
    assert verdict.EV_LOOP_HEAD is constants.EV_LOOP_HEAD and verdict.EV_IDLE is constants.EV_IDLE
    assert runnable.RUNNABLE_FROM == {code: name for name, code in constants.RUNNABLE_FROM.items()}
    assert runnable.NO_REASON == constants.NO_REASON
    assert constants.shared()["FH_CELLS"] == 3 * constants.FH_REASONS * constants.FH_SLOTS


def test_stall_kinds_and_counters_are_distinct():
    assert len(set(constants.STALL_KINDS.values())) == len(constants.STALL_KINDS)
    assert len(set(constants.COUNTER_NAMES)) == len(constants.COUNTER_NAMES)


@pytest.mark.parametrize("version", GO_VERSIONS)
def test_goroutine_states_are_gos_own(version):
    src = (goroot(version) / "src" / "runtime" / "runtime2.go").read_text()
    iota = dict(re.findall(r"^\s*(_G[a-z]+)\b[^\n]*?//\s*(\d+)\s*$", src, re.M))
    scan = re.search(r"^\s*_Gscan\s*=\s*(0x[0-9a-f]+)", src, re.M).group(1)
    for name, value in gstatus.RUNTIME2_NAMES.items():
        got = int(scan, 16) if name == "_Gscan" else int(iota[name])
        assert got == value, f"Go {version}: {name} is {got}, lgf has {value}"
