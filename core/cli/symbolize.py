"""``lgf symbolize BINARY [--addr2line] [--return-addrs] [--cache-dir DIR | --no-cache]``: hex PCs on
stdin, Go frames on stdout.

Default output, per PC: the PC, then one indented line per frame, innermost first, inlined
frames marked::

    0x4a50fd
        main.leaf main.go:14 (inlined)
        main.middle main.go:19 (inlined)
        main.work main.go:31

``--addr2line`` prints, line for line, what ``go tool addr2line BINARY`` prints for the same
input (outermost function name, then the innermost ``file:line``; ``?`` and ``?:0`` outside any
function), so scripts written for it (pprof) keep working; its input quirks are kept too.

Speed: with the C decoder (``lgf.golang._pcvalue``), ``--addr2line`` hands whatever input has
arrived (up to 64 KiB of lines) to one C call that parses, looks up and prints it, and answers
each batch as soon as it is read (so a script writing one PC and waiting for its answer works).
Without the C module (logged), the same answers come from a line-by-line Python loop.

The binary's decoded pc-value tables are kept per build in ``<spool_dir>/symcache``
(:mod:`lgf.golang.pclntab_cache`; spool_dir from ``-c CONFIG``, else ``/var/lib/lgf``), shared with
the running lgf: a second run over the same build reads them instead of decoding. A directory that
cannot be written (not root) is logged and the run goes on without it; ``--log-level debug`` says
whether the index came from the cache.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

from lgf.golang.pclntab import PclntabError
from lgf.golang.pclntab_cache import CACHE_SUBDIR, IndexCache
from lgf.golang.symbols import Symbolizer

DEFAULT_SPOOL_DIR = "/var/lib/lgf"
"""HostOptions.spool_dir's default (lgf.config is not imported for it: start-up time is what this
command is measured by; tests/test_symbolize_cmd.py checks the two agree)."""

log = logging.getLogger(__name__)

_HEX = frozenset("0123456789abcdefABCDEF")
_MAX_U64 = (1 << 64) - 1


def parse_pc_like_addr2line(text: str) -> int:
    """What ``strconv.ParseUint(strings.TrimPrefix(text, "0x"), 16, 64)`` gives, error ignored.

    A syntax error gives 0 and a value too large gives 2^64-1, as in Go, which reads the digits in
    order and stops at the first that overflows (so "11111111111111111z" is 2^64-1, not 0).
    """
    digits = text[2:] if text.startswith("0x") else text
    value = 0
    for ch in digits:
        if ch not in _HEX:
            return 0
        if value >> 60:
            return _MAX_U64
        value = value * 16 + int(ch, 16)
    return value


def _lines(stream) -> Iterator[str]:
    """Lines as Go's bufio.ScanLines cuts them: on "\\n", one trailing "\\r" dropped."""
    for raw in stream:
        line = raw.decode("latin-1")
        if line.endswith("\n"):
            line = line[:-1]
        if line.endswith("\r"):
            line = line[:-1]
        yield line


HELP = "turn hex PCs on stdin into Go frames"
DESCRIPTION = "Turn hex PCs (stdin, one per line, optional 0x) into Go frames."
EPILOG = ("examples:\n  echo 0x4a50fd | lgf symbolize ./server\n"
          "  lgf symbolize --addr2line ./server < pcs.txt   # same output as go tool addr2line")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("binary", help="a Go ELF executable (stripped or not, Go 1.18 or later)")
    p.add_argument("--addr2line", action="store_true",
                   help="print exactly what `go tool addr2line BINARY` prints for the same input")
    p.add_argument("--return-addrs", action="store_true",
                   help="the PCs are return addresses from a stack: look up pc-1, as Go's traceback does")
    p.add_argument("-c", "--config", help="plugins.toml, for its [lgf] spool_dir (where the symbol cache is)")
    cache = p.add_mutually_exclusive_group()
    cache.add_argument("--cache-dir", help=f"the decoded-table cache (default: SPOOL_DIR/{CACHE_SUBDIR}, "
                                           f"SPOOL_DIR the config's or {DEFAULT_SPOOL_DIR})")
    cache.add_argument("--no-cache", action="store_true", help="decode the tables here; read and write no cache")


def _index_cache(args: argparse.Namespace) -> IndexCache | None:
    if args.no_cache:
        return None
    directory = args.cache_dir
    if directory is None:
        spool_dir = DEFAULT_SPOOL_DIR
        if args.config:
            from lgf.config import parse_toml  # only the raw table, as `lgf spool` reads it

            spool_dir = str(parse_toml(args.config).get("lgf", {}).get("spool_dir", DEFAULT_SPOOL_DIR))
        directory = Path(spool_dir) / CACHE_SUBDIR
    return IndexCache(directory)


_BATCH = 1 << 16
"""Bytes of input read at most per batch of the C path."""


def _addr2line_batches(table, stdin, stdout) -> None:
    """The ``--addr2line`` loop of the C path: each read's complete lines in one C call, answered
    (and flushed) before the next read; an unterminated last line is a line, as in bufio.ScanLines."""
    rest = b""
    while True:
        chunk = stdin.read1(_BATCH)
        if not chunk:
            if rest:
                stdout.write(table.addr2line_text(rest + b"\n"))
            return
        cut = chunk.rfind(b"\n") + 1
        if not cut:
            rest += chunk
            continue
        try:
            stdout.write(table.addr2line_text(rest + chunk[:cut]))
        except PclntabError as exc:
            stdout.write(exc.partial)
            raise
        rest = chunk[cut:]
        stdout.flush()


def run(args: argparse.Namespace) -> int:
    sym = Symbolizer(args.binary, index_cache=_index_cache(args))
    try:
        table = sym.table  # open now, so a bad binary is reported before any input is read
    except PclntabError as exc:
        print(f"lgf symbolize: {args.binary}: {exc}", file=sys.stderr)
        return 1
    log.debug("%s: pc-value index %s", args.binary, {"cache": "read from the cache", "built": "decoded here"}
              .get(table.index_source, "not used (pure-Python path)"))
    out = sys.stdout
    try:
        if args.addr2line and table.native:
            _addr2line_batches(table, sys.stdin.buffer, sys.stdout.buffer)
            sys.stdout.buffer.flush()
            return 0
        for line in _lines(sys.stdin.buffer):
            if args.addr2line:
                if ":" in line:
                    out.write("!reverse translation not implemented\n")
                    continue
                name, where = sym.addr2line(parse_pc_like_addr2line(line))
                out.write(f"{name}\n{where}\n")
                continue
            text = line.strip()
            if not text:
                continue
            digits = text[2:] if text[:2].lower() == "0x" else text
            try:
                pc = int(digits, 16)
            except ValueError:
                out.write(f"{text}\n    ? (not a hex PC)\n")
                continue
            frames = sym.frames(pc, is_return_addr=args.return_addrs)
            out.write(f"{pc:#x}\n")
            if not frames:
                out.write("    ? (in no function)\n")
            for f in frames:
                out.write(f"    {f.func} {f.file}:{f.line}{' (inlined)' if f.inlined else ''}\n")
    except PclntabError as exc:
        out.flush()
        print(f"lgf symbolize: {args.binary}: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0
    finally:
        sym.close()
    out.flush()
    return 0
