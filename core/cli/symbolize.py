"""``lgf symbolize BINARY [--addr2line] [--return-addrs]``: hex PCs on stdin, Go frames on stdout.

Default output, per PC: the PC, then one indented line per frame, innermost first, inlined
frames marked::

    0x4a50fd
        main.leaf main.go:14 (inlined)
        main.middle main.go:19 (inlined)
        main.work main.go:31

``--addr2line`` prints, line for line, what ``go tool addr2line BINARY`` prints for the same
input (outermost function name, then the innermost ``file:line``; ``?`` and ``?:0`` outside any
function), so scripts written for it (pprof) keep working; its input quirks are kept too.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator

from lgf.golang.pclntab import PclntabError
from lgf.golang.symbols import Symbolizer

_HEX = frozenset("0123456789abcdefABCDEF")
_MAX_U64 = (1 << 64) - 1


def parse_pc_like_addr2line(text: str) -> int:
    """What ``strconv.ParseUint(strings.TrimPrefix(text, "0x"), 16, 64)`` gives, error ignored.

    A syntax error gives 0 and a value too large gives 2^64-1, as in Go.
    """
    digits = text[2:] if text.startswith("0x") else text
    if not digits or not set(digits) <= _HEX:
        return 0
    return min(int(digits, 16), _MAX_U64)


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


def run(args: argparse.Namespace) -> int:
    sym = Symbolizer(args.binary)
    try:
        sym.table  # noqa: B018  (open now, so a bad binary is reported before any input is read)
    except PclntabError as exc:
        print(f"lgf symbolize: {args.binary}: {exc}", file=sys.stderr)
        return 1
    out = sys.stdout
    try:
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
