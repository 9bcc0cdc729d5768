"""The ``file`` sink: JSON lines or a msgpack stream, rotated by size, flushed per event.

The pipeline hands it a batch at a time (``send_batch``): the batch's lines go out in one
``writev``, each line the bytes the event was encoded to once (``lgf.event``, shared with the
alert journal and the spools), handed to the kernel as they are. Joining them first copied a
batch's 170 kB once more, through the CPU's cache, for every 256 stalls of a storm.

Rotation keeps ``keep`` old files as ``path.1`` (newest) ... ``path.N``. ``flush = "event"``
(the default) writes every event through to the kernel before ``send`` returns, so a crash of
lgf loses nothing already sent to this sink; ``"batch"`` leaves it to the buffer (faster, for
recording load tests). ``fsync = true`` also forces it to disk.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lgf import Component, hookimpl
from lgf.event import Event, json_bytes, to_msgpack
from lgf.options import Size

IOV_MAX = os.sysconf("SC_IOV_MAX") if "SC_IOV_MAX" in os.sysconf_names else 1024
"""Parts one ``writev`` takes at most."""


@dataclass
class FileOptions:
    path: str
    """The file to append to; its directory is created."""
    format: Literal["jsonl", "msgpack"] = "jsonl"
    """One JSON object per line, or a msgpack stream (``lgf replay`` reads both)."""
    max_size: Size = Size(64 * 1024 * 1024)
    """Rotate when the file would grow past this."""
    keep: int = 5
    """Rotated files kept as ``path.1`` (newest) ... ``path.N``."""
    flush: Literal["event", "batch"] = "event"
    """``event``: written through to the kernel before ``send`` returns; ``batch``: buffered."""
    fsync: bool = False
    """Also force every write to disk."""

    def __post_init__(self):
        if self.keep < 0:
            raise ValueError("keep: must be 0 or more")
        if self.max_size <= 0:
            raise ValueError("max_size: must be more than 0")


class FileSink:
    durable = False  # the file is its own durable record
    default_receive = "both"

    def __init__(self, options: FileOptions, ctx=None):
        self.options = options
        self.path = Path(options.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._fh = open(self.path, "ab")
        self._size = os.fstat(self._fh.fileno()).st_size
        """Bytes in the file: what it holds, plus what this sink wrote or buffered since."""

    def send(self, event: Event) -> None:
        self.send_batch((event,))

    def send_batch(self, events) -> None:
        """Append ``events`` in order, rotating between two of them when the file would grow past
        ``max_size``; with ``flush = "event"`` every one is with the kernel when this returns."""
        if self.options.format == "msgpack":
            records, separator = [to_msgpack(event) for event in events], b""
        else:  # the shared bytes as they are; the newlines go in beside them
            records, separator = [json_bytes(event) for event in events], b"\n"
        with self._lock:
            size = self._size
            if size + sum(map(len, records)) + len(separator) * len(records) <= self.options.max_size:
                self._write(records, separator)  # the whole batch fits: no size kept per record
                records = []
            chunk: list[bytes] = []
            for data in records:
                length = len(data) + len(separator)
                if size + length > self.options.max_size and size > 0:
                    self._write(chunk, separator)
                    chunk = []
                    self._rotate()
                    size = 0
                chunk.append(data)
                size += length
            self._write(chunk, separator)
            if self.options.flush == "event":
                self._fh.flush()
                if self.options.fsync:
                    os.fsync(self._fh.fileno())

    def _write(self, chunk: list[bytes], separator: bytes) -> None:
        """``chunk``'s records, each followed by ``separator``: to the buffer with ``flush =
        "batch"``, else straight to the kernel (whatever the buffer held first)."""
        if not chunk:
            return
        parts = [part for data in chunk for part in (data, separator) if part]
        self._size += sum(map(len, parts))
        if self.options.flush == "batch":
            self._fh.write(b"".join(parts))
            return
        self._fh.flush()
        _write_all(self._fh.fileno(), parts)

    def _rotate(self) -> None:
        self._fh.close()
        keep = self.options.keep
        if keep == 0:
            self.path.unlink(missing_ok=True)
        else:
            for i in range(keep - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{i}")
                if older.exists():
                    older.replace(self.path.with_name(f"{self.path.name}.{i + 1}"))
            self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        self._fh = open(self.path, "ab")
        self._size = 0

    def flush(self) -> None:
        with self._lock:
            self._fh.flush()

    def close(self) -> None:
        with self._lock:
            if not self._fh.closed:
                self._fh.flush()
                self._fh.close()


def _write_all(fd: int, parts: list[bytes]) -> None:
    """``parts`` to ``fd`` in as few ``writev`` calls as the kernel takes (IOV_MAX parts each); a
    short write (a signal, a full disk) is finished with plain writes."""
    for i in range(0, len(parts), IOV_MAX):
        group = parts[i:i + IOV_MAX]
        done = os.writev(fd, group)
        if done < sum(map(len, group)):
            rest = memoryview(b"".join(group))[done:]
            while rest:
                rest = rest[os.write(fd, rest):]


@hookimpl
def lgf_components():
    return [Component("sink", "file", FileSink, FileOptions,
                      "Append each stall or alert to a JSON-lines or msgpack file, rotated by size.")]
