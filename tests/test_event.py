"""The event contract: msgpack and JSON carry every key of docs/stalls.md's "The event", both ways."""

from __future__ import annotations

import json

from lgf.event import (
    CONTRACT_KEYS,
    Event,
    from_json,
    from_msgpack,
    read_events,
    to_json,
    to_msgpack,
    wallclock_of,
    write_events,
)

REQUIRED = ("kind id pid tid comm exe goid go_version build_id start_ns end_ns duration_ns ts cause "
            "wait_reason syscall stack stack_summary gc_phase poller sched tags topology env severity "
            "trace_id span_id labels scope http_method http_path").split()
"""The contract's keys, with issue 9's request scope and issue 11's trace context (docs/stalls.md, "The event")."""


def sample() -> Event:
    return Event(pid=4242, tid=4243, comm="api", exe="/usr/bin/api", goid=18, go_version="go1.25.5",
                 build_id="abc/def", start_ns=1_000, end_ns=120_001_000, cause="channel",
                 wait_reason="chan receive", stack=[{"func": "main.worker", "file": "/src/main.go",
                                                     "line": 42, "pc": 0x4a1234, "inlined": False}],
                 stack_summary=["main.worker"], gc_phase={"phase": "off"}, tags={"team": "pay"},
                 env="prod", severity="warning", trace_id="t1", pcs=[0x4a1234],
                 extra={"third_party": {"x": 1}}).finish()


def test_contract_keys_are_the_design_keys():
    assert set(REQUIRED) == set(CONTRACT_KEYS)


def test_msgpack_round_trip_keeps_every_key():
    ev = sample()
    back = from_msgpack(to_msgpack(ev))
    assert back == ev
    assert set(REQUIRED) <= set(back.to_dict())


def test_json_round_trip_keeps_every_key():
    ev = sample()
    data = json.loads(to_json(ev))
    assert set(REQUIRED) <= set(data)
    assert data["third_party"] == {"x": 1}  # extra keys sit beside the contract keys
    assert from_json(to_json(ev)) == ev


def test_finish_derives_duration_and_wallclock():
    ev = sample()
    assert ev.duration_ns == 120_000_000
    assert ev.ts.endswith("Z") and len(ev.ts.split(".")[1]) == 10  # nanoseconds + Z


def test_wallclock_of_now_is_now():
    import datetime
    import time
    ts = wallclock_of(time.clock_gettime_ns(time.CLOCK_MONOTONIC))
    parsed = datetime.datetime.fromisoformat(ts[:26] + "+00:00")  # microseconds are enough here
    assert abs(parsed.timestamp() - time.time()) < 5


def test_files_in_both_formats_read_back(tmp_path):
    events = [sample() for _ in range(5)]
    for fmt in ("msgpack", "jsonl"):
        p = tmp_path / f"ev.{fmt}"
        assert write_events(p, events, fmt) == 5
        assert list(read_events(p)) == events


def test_a_frozen_event_is_encoded_once_and_an_unfrozen_one_each_time():
    from lgf.event import json_bytes, to_msgpack
    ev = Event(pid=1, end_ns=10**8, extra={"service": "api"}).finish()
    first = to_msgpack(ev)
    ev.comm = "changed"
    assert to_msgpack(ev) != first                  # not frozen: what it is now
    ev.freeze()
    assert to_msgpack(ev) is to_msgpack(ev)         # frozen: one encoding, shared
    assert json_bytes(ev) is json_bytes(ev)
    assert from_msgpack(to_msgpack(ev)) == ev == from_json(json_bytes(ev))


def test_the_bytes_are_what_json_and_msgpack_make_of_to_dict_and_a_value_msgspec_refuses_still_encodes():
    """msgspec encodes the dataclass and the extra keys are spliced in at the top level: the bytes
    must be exactly those of the standard library's json and of msgpack over ``to_dict``."""
    import json

    import msgpack
    frame = {"func": "main.handler", "file": "/src/app.go", "line": 120, "pc": 0x4A1234, "inlined": False}
    events = [
        Event(pid=3, comm="héllo", end_ns=10**8, pcs=[0x401000], extra={"ratio": 0.1, "nested": {"a": [1, 2]}}),
        Event(),                                                   # no extra at all
        Event(kind="alert", stack=[frame] * 20, extra={"count": 3, "pids": [1, 2], "none": None, 7: "int key"}),
        Event(pid=4, extra={"pid": 99, "comm": "shadow", "x": 1}),  # keys a field has: the field wins
        Event(extra={f"k{i}": i for i in range(20)}),             # a map16 of extra keys
        Event(extra={f"k{i}": i for i in range(70_000)}),         # more keys than a map16 holds
    ]
    for ev in events:
        ev.finish()
        assert to_json(ev) == json.dumps(ev.to_dict(), ensure_ascii=False, separators=(",", ":"))
        assert to_msgpack(ev) == msgpack.packb(ev.to_dict(), use_bin_type=True)
    huge = Event(extra={"big": 2**70})  # past 64 bits: msgspec refuses, json and msgpack fallbacks
    assert from_json(to_json(huge)).extra["big"] == 2**70
    assert from_msgpack(to_msgpack(Event(extra={"big": 2**63}))).extra["big"] == 2**63


def test_finish_all_fills_what_finish_fills():
    import time as _time

    from lgf.event import finish_all, wallclock_of

    now = _time.clock_gettime_ns(_time.CLOCK_MONOTONIC)
    made = [Event(start_ns=now - 5 * 10**6, end_ns=now), Event(end_ns=0), Event(start_ns=1, end_ns=3, ts="given")]
    before = wallclock_of(now)
    finish_all(made)
    after = wallclock_of(now)
    assert made[0].duration_ns == 5 * 10**6 and made[0].ts[:19] in (before[:19], after[:19])
    assert len(made[0].ts) == 30 and made[0].ts.endswith("Z")
    assert (made[1].duration_ns, made[1].ts) == (0, "")  # no end: nothing to derive, as finish
    assert (made[2].duration_ns, made[2].ts) == (2, "given")
