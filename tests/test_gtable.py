"""lgf.golang.gtable: every g struct of a live process read in bulk, page by page.

The oracle is lgf's own one-g-at-a-time reader (``read_g_fields``, which the sampler used before
and the enrichers still use) on the same live program: tests/goapps/manyg with 20,000 idle
workers (their g structs do not change while they wait, so two reads must agree field for
field), on every supported toolchain.
"""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from lgf.golang.gtable import PAGE, GoroutineTable
from lgf.golang.runtime_reader import RuntimeReader, Unreadable, allg_pointers, read_g_fields
from support.gobuild import GO_VERSIONS, GOAPPS, build_go

WORKERS = 20_000
FIELDS = (("atomicstatus", "I"), ("goid", "Q"), ("waitreason", "B"), ("trackingSeq", "B"), ("startpc", "Q"))


@pytest.fixture(scope="module", params=GO_VERSIONS)
def manyg(request, go_toolchains):
    proc = subprocess.Popen([str(build_go(GOAPPS / "manyg", request.param)), "-n", str(WORKERS)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    hello = json.loads(proc.stdout.readline())
    reader = RuntimeReader(proc.pid)
    yield reader, hello
    proc.kill()
    proc.wait()
    reader.close()


def _fields(reader):
    return sorted((name, reader.offset("g", name), letter) for name, letter in FIELDS)


def _oracle(reader, gs, fields) -> dict[int, tuple]:
    by_offset = sorted(fields, key=lambda f: f[1])
    rows = read_g_fields(reader, gs, [(off, letter) for _n, off, letter in by_offset])
    order = [name for name, _o, _l in by_offset]
    return {row[0]: tuple(row[1 + order.index(name)] for name, _o, _l in fields) for row in rows}


def test_every_g_is_read_as_the_one_at_a_time_reader_reads_it(manyg):
    reader, hello = manyg
    fields = _fields(reader)
    table = GoroutineTable(reader, fields, max_goroutines=1_000_000)
    table.refresh()
    assert len(table.gs) >= hello["goroutines"] >= WORKERS
    assert table.gs.tolist() == allg_pointers(reader, 1_000_000)
    idx, cols = table.read()
    assert sorted(idx.tolist()) == list(range(len(table.gs)))
    oracle = _oracle(reader, table.gs.tolist(), fields)
    got = {int(table.gs[i]): tuple(int(cols[name][k]) for name, _o, _l in fields) for k, i in enumerate(idx)}
    differ = [g for g in got if got[g] != oracle[g]]
    # only the few gs that ran between the two reads may differ (main, the runtime's own)
    assert len(differ) <= 10, differ[:10]
    assert sum(1 for v in got.values() if v[0] == 4) >= WORKERS  # _Gwaiting: the idle workers
    # far fewer pages than gs: the whole point (a g struct is a few hundred bytes)
    assert len(table.pages) < len(table.gs) / 4


def test_a_read_of_some_pages_gives_exactly_the_gs_lying_whole_in_them(manyg):
    reader, _hello = manyg
    fields = _fields(reader)
    table = GoroutineTable(reader, fields, max_goroutines=1_000_000)
    table.refresh()
    want = np.zeros(len(table.pages), dtype=bool)
    want[::3] = True  # every third page: many gs run into a page that is not read
    want[len(want) // 2:len(want) // 2 + 40] = True
    idx, cols = table.read(np.flatnonzero(want))
    lo = min(off for _n, off, _l in fields)
    hi = max(off + {"I": 4, "Q": 8, "B": 1}[letter] for _n, off, letter in fields)
    pages = set(table.pages[want].tolist())
    expect = {i for i, g in enumerate(table.gs.tolist())
              if ((g + lo) & ~(PAGE - 1)) in pages and ((g + hi - 1) & ~(PAGE - 1)) in pages}
    assert set(idx.tolist()) == expect and len(idx) == len(expect)
    oracle = _oracle(reader, [int(table.gs[i]) for i in idx], fields)
    goid_at = [name for name, _o, _l in fields].index("goid")
    assert all(int(cols["goid"][k]) == oracle[int(table.gs[i])][goid_at] for k, i in enumerate(idx))


def test_more_goroutines_than_allowed_is_refused_not_read(manyg):
    reader, _hello = manyg
    table = GoroutineTable(reader, _fields(reader), max_goroutines=WORKERS // 2)
    with pytest.raises(Unreadable, match="too_many"):
        table.refresh()
