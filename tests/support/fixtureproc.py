"""A Go fixture program driven over its stdin: the one way the tests stop one.

Closing stdin is the fixtures' signal to finish (each reads stdin until EOF); a fixture that
does not exit within 5 s is killed, so a hung fixture never outlives its test.
"""

from __future__ import annotations

import subprocess


class FixtureProcess:
    """Base of the fixture drivers: ``self.proc`` is the ``subprocess.Popen`` of the program."""

    proc: subprocess.Popen

    def close(self) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
