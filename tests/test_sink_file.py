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


def test_a_batch_is_rotated_between_two_events_and_every_event_is_kept_in_order(tmp_path):
    path = tmp_path / "b.jsonl"
    sink = FileSink(FileOptions(path=str(path), max_size=2000, keep=5))
    sent = [Event(pid=i, end_ns=10**8).finish().freeze() for i in range(12)]
    sink.send_batch(sent)  # one call, more than 2000 bytes: it spans several files
    # flushed when send_batch returns, before close; oldest file first
    files = sorted(tmp_path.iterdir(), key=lambda p: -int(p.suffix[1:]) if p.suffix[1:].isdigit() else 0)
    kept = [e.pid for f in files for e in read_events(f)]
    sink.close()
    assert len(files) > 2 and kept == list(range(12))
    assert all(p.stat().st_size <= 2000 for p in files)


def test_a_frozen_event_is_written_as_the_bytes_the_journal_and_spools_share(tmp_path):
    from lgf.event import json_bytes, to_msgpack
    ev = Event(pid=7, end_ns=10**8, extra={"service": "api"}).finish().freeze()
    for fmt, encoded in (("jsonl", json_bytes(ev) + b"\n"), ("msgpack", to_msgpack(ev))):
        path = tmp_path / f"f.{fmt}"
        sink = FileSink(FileOptions(path=str(path), format=fmt))
        sink.send(ev)
        sink.close()
        assert path.read_bytes() == encoded


def test_a_batch_of_more_lines_than_one_writev_takes_is_written_whole_and_in_order(tmp_path):
    from lgf.sinks.file import IOV_MAX
    n = IOV_MAX  # a line and its newline are two parts: twice as many parts as one writev takes
    for fmt, flush in (("jsonl", "event"), ("msgpack", "event"), ("jsonl", "batch")):
        path = tmp_path / f"w.{fmt}.{flush}"
        path.write_bytes(b"")
        sink = FileSink(FileOptions(path=str(path), format=fmt, flush=flush))
        sink.send_batch([Event(pid=i, end_ns=10**8).finish().freeze() for i in range(n)])
        sink.send(Event(pid=n, end_ns=10**8).finish())
        sink.close()
        assert [e.pid for e in read_events(path)] == list(range(n + 1)), (fmt, flush)


def test_a_file_that_held_lines_before_is_rotated_by_its_whole_size(tmp_path):
    path = tmp_path / "old.jsonl"
    path.write_bytes(b"x" * 1900 + b"\n")  # left by an earlier lgf: counted, not just what this sink wrote
    sink = FileSink(FileOptions(path=str(path), max_size=2000, keep=1))
    sink.send(Event(pid=1, end_ns=10**8).finish())
    sink.close()
    assert (tmp_path / "old.jsonl.1").read_bytes() == b"x" * 1900 + b"\n"
    assert [e.pid for e in read_events(path)] == [1]
