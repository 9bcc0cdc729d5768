"""WeCom contents: never over the byte limit, never a broken UTF-8 character, no alert id lost."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lgf import Event
from lgf.sinks.wecom_format import (
    LIMITS,
    alert_messages,
    cut_utf8,
    digest_messages,
    nbytes,
    split_utf8,
)

# Text that mixes 1-, 2-, 3- and 4-byte characters and newlines.
mixed_text = st.text(alphabet=st.sampled_from(list("ab\n é中文栈帧😀")), max_size=3000)


@settings(max_examples=200, deadline=None)
@given(mixed_text, st.integers(min_value=4, max_value=600))
def test_split_utf8_pieces_fit_and_join_back(text, limit):
    pieces = split_utf8(text, limit)
    assert "".join(pieces) == text
    assert all(nbytes(p) <= limit for p in pieces)
    assert all(p.encode("utf-8").decode("utf-8") == p for p in pieces)


@settings(max_examples=200, deadline=None)
@given(mixed_text, st.integers(min_value=0, max_value=600))
def test_cut_utf8_is_the_longest_prefix_on_a_character_boundary(text, limit):
    head = cut_utf8(text, limit)
    assert text.startswith(head) and nbytes(head) <= limit
    if head != text:
        assert nbytes(text[:len(head) + 1]) > limit


def chinese_alert(frames: int = 200, severity: str = "critical") -> Event:
    stack = [{"func": f"支付服务/内部.(*处理器).处理请求第{i}层", "file": f"/源码/服务/处理器_{i}.go",
              "line": i, "pc": 0x400000 + i, "inlined": False} for i in range(frames)]
    return Event(kind="alert", pid=4242, goid=17, comm="支付网关", cause="lock",
                 wait_reason="sync.Mutex.Lock", duration_ns=1_234_567_890, severity=severity,
                 env="生产", stack=stack, tags={"service": "支付服务", "团队": "核心交易" * 40},
                 topology={"机房": "上海" * 200}, extra={"count": 37, "worst_ns": 2_100_000_000,
                                                       "total_ns": 8_000_000_000, "goroutines": 12})


@pytest.mark.parametrize("msgtype", ["markdown", "text", "markdown_v2"])
def test_a_long_chinese_alert_is_split_within_the_limit_with_its_id_kept(msgtype):
    ev = chinese_alert()
    parts = alert_messages(ev.to_dict(), msgtype, footer="<@zhangsan>" if msgtype == "markdown" else "",
                           stack_frames=200)
    assert len(parts) > 1
    assert all(nbytes(p) <= LIMITS[msgtype] for p in parts)
    assert all(p.startswith(f"({i}/{len(parts)})") for i, p in enumerate(parts, 1))
    joined = "".join(parts)
    assert ev.id in joined and "支付服务" in joined and "处理请求第199层" in joined
    if msgtype == "markdown":
        assert parts[-1].endswith("<@zhangsan>")


def test_a_short_alert_is_one_message_with_what_on_call_needs():
    ev = chinese_alert(frames=3)
    ev.tags = {"service": "支付服务"}
    ev.topology = {}
    (msg,) = alert_messages(ev.to_dict(), "markdown")
    assert msg.startswith('<font color="warning">**CRITICAL**</font>')
    for needle in ("支付服务", "生产", "cause: lock", "pid 4242", "goid 17", "37 stalls", "worst 2.1 s",
                   "处理请求第0层", f"id: {ev.id}"):
        assert needle in msg, needle


def test_user_text_cannot_smuggle_a_mention_into_markdown():
    ev = chinese_alert(frames=1)
    ev.tags = {"service": "<@all>"}
    (msg,) = alert_messages(ev.to_dict(), "markdown")
    assert "<@all>" not in msg


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["critical", "warning", "info", "", "bogus"]),
                          st.sampled_from(["支付服务", "api", "订单" * 300]),
                          st.sampled_from(["lock", "channel", "网络"])), min_size=1, max_size=400),
       st.sampled_from(["markdown", "text", "markdown_v2"]))
def test_a_digest_lists_every_alert_id_once_within_the_limit(specs, msgtype):
    dicts = [Event(kind="alert", severity=sev, tags={"service": svc}, cause=cause,
                   duration_ns=10**9).to_dict() for sev, svc, cause in specs]
    footer = "<@lisi><@wangwu>" if msgtype == "markdown" else ""
    messages = digest_messages(dicts, msgtype, footer, why="400 pending, 3 left this minute")
    listed = [i for _, ids in messages for i in ids]
    assert sorted(listed) == sorted(d["id"] for d in dicts)
    for content, ids in messages:
        assert nbytes(content) <= LIMITS[msgtype]
        assert all(i in content for i in ids)
        if footer:
            assert content.endswith(footer)


def test_a_digest_puts_the_most_severe_first():
    dicts = [Event(kind="alert", severity=s, comm="api").to_dict() for s in ("info", "warning", "critical")]
    ((content, ids),) = digest_messages(dicts, "text")
    assert content.index("[CRITICAL]") < content.index("[WARNING]") < content.index("[INFO]")
    assert ids == [dicts[2]["id"], dicts[1]["id"], dicts[0]["id"]]


def test_an_alert_from_the_alert_policy_shows_its_service_where_and_own_code_first():
    stack = [{"func": "runtime.gopark", "file": "/go/src/runtime/proc.go", "line": 1},
             {"func": "runtime.chanrecv", "file": "/go/src/runtime/chan.go", "line": 2},
             {"func": "main.(*Worker).wait", "file": "/app/worker.go", "line": 42},
             {"func": "main.main", "file": "/app/main.go", "line": 9}]
    ev = Event(kind="alert", pid=9, comm="worker", cause="channel", wait_reason="chan receive",
               severity="warning", stack=stack, extra={
                   "service": "billing", "top_frame": "main.(*Worker).wait", "count": 5,
                   "worst_ns": 3 * 10**8, "total_ns": 10**9, "pids": [9, 10], "goroutines": 4,
                   "suppressed_repeats": 2})
    (msg,) = alert_messages(ev.to_dict(), "text")
    assert msg.startswith("[WARNING] lgf alert: billing stalled 300 ms")
    assert "where: main.(*Worker).wait" in msg
    assert "5 stalls in 4 goroutines of 2 processes, worst 300 ms, total 1 s (2 repeats held back)" in msg
    assert "(2 runtime frames)" in msg and "runtime.gopark" not in msg
    assert msg.index("main.(*Worker).wait (/app/worker.go:42)") < msg.index("main.main (/app/main.go:9)")
