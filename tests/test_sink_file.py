"""The file sink: JSONL and msgpack that read back, and size rotation that keeps N files."""

from __future__ import annotations

from lgf.event import Event, read_events
from lgf.sinks.file import FileOptions, FileSink


def test_jsonl_and_msgpack_read_back(tmp_path):
    for fmt in ("jsonl", "msgpack"):
        sink = FileSink(FileOptions(path=str(tmp_path / f"o.{fmt}"), format=fmt))
        sent = [Event(pid=i, end_ns=10**8).finish() for i in range(10)]
        for ev in sent:
            sink.send(ev)
        # flushed per event: readable before close
        assert list(read_events(tmp_path / f"o.{fmt}")) == sent
        sink.close()


def test_rotation_keeps_the_configured_number_of_files(tmp_path):
    path = tmp_path / "s.jsonl"
    sink = FileSink(FileOptions(path=str(path), max_size=2000, keep=2))
    sent = [Event(pid=i, end_ns=10**8).finish() for i in range(40)]
    for ev in sent:
        sink.send(ev)
    sink.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["s.jsonl", "s.jsonl.1", "s.jsonl.2"]
    for p in tmp_path.iterdir():
        assert p.stat().st_size <= 2000
    kept = [e.pid for name in ("s.jsonl.2", "s.jsonl.1", "s.jsonl") for e in read_events(tmp_path / name)]
    assert kept == list(range(40))[-len(kept):]  # the newest, in order, none reordered


def test_stdout_marks_a_sampled_duration_as_a_lower_bound():
    import io

    from lgf.sinks.stdout import StdoutOptions, StdoutSink
    out = io.StringIO()
    sink = StdoutSink(StdoutOptions(), stream=out)
    sink.send(Event(pid=7, goid=3, start_ns=0, end_ns=98_100_000, cause="lock",
                    wait_reason="sync.Mutex.Lock", extra={"precision": "sampled"}).finish())
    sink.send(Event(pid=7, goid=3, start_ns=0, end_ns=120_400_000, cause="lock").finish())
    first, second = out.getvalue().splitlines()
    assert " STALL >=98.1ms lock pid=7 goid=3 " in first
    assert " STALL 120.4ms lock " in second
