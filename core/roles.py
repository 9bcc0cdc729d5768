"""Who may do what on lgf's HTTP API: identities, their roles, and a record of every change.

Roles, each with the rights of the ones before it:

* ``viewer``: read (``/debug/latency``, ``/api/silences``, ``/api/baselines``, ``/metrics``);
* ``operator``: add and expire silences, note deploys and load tests;
* ``approver``: also approve a pending silence (prod) that **someone else** asked for.

Tokens come from environment variables, ``LGF_TOKEN_<ROLE>`` (identity: the role's name) or
``LGF_TOKEN_<ROLE>_<NAME>`` (identity: ``name``, lower case), and from ``[http] token_file``,
a TOML file of one table per identity::

    [alice]
    role = "operator"
    token = "..."

which must be owned by root and readable by nobody else (mode 600 or 400): lgf refuses any other
file with a message naming the fix, since a token anyone on the host can read guards nothing.
The older ``[http] token_env`` still works: its token is the identity ``token`` with the operator
role. A request presents ``Authorization: Bearer <token>``; a token is compared in constant time
and never logged, and two identities may not share one.

Without a token a request gets: from loopback, the viewer role, plus the operator role when the
environment allows it (``loopback_changes``: dev and test) and no token is configured at all,
which is exactly lgf's rule before roles; from elsewhere, nothing when tokens exist, the viewer
role when none do (the default listen address is loopback anyway).

Every change is logged at INFO with who made it and appended to ``<spool_dir>/audit.jsonl``
(identity, role, action, what; never a token).

Cost: per request, one comparison per configured token.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import stat
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("lgf.roles")

ROLES = ("viewer", "operator", "approver")
RANK = {role: i for i, role in enumerate(ROLES)}
ENV_PREFIX = "LGF_TOKEN_"
AUDIT_FILE = "audit.jsonl"


class TokenFileError(ValueError):
    """A token file lgf will not read; the message names the file and the fix."""


@dataclass(frozen=True)
class Identity:
    name: str
    role: str
    via: str
    """"token", "loopback" (no token, from loopback) or "anonymous"."""

    def may(self, role: str) -> bool:
        return RANK[self.role] >= RANK[role]


@dataclass(frozen=True)
class Refusal:
    code: int
    message: str


def check_token_file(path: str) -> None:
    """Refuse a token file that is missing, not root's, or readable by group or others."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise TokenFileError(f"cannot read token file {path}: {exc.strerror}") from None
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise TokenFileError(f"token file {path} is readable or writable by group or others (mode {mode:04o}): "
                             f"run `chmod 600 {path}`")
    if st.st_uid != 0:
        raise TokenFileError(f"token file {path} is owned by uid {st.st_uid}, not root: run `chown root {path}`")


def read_token_file(path: str) -> dict[str, tuple[str, str]]:
    """``{token: (identity, role)}`` from a checked token file. Raises TokenFileError."""
    check_token_file(path)
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise TokenFileError(f"token file {path}: {exc}") from None
    out: dict[str, tuple[str, str]] = {}
    for name, entry in data.items():
        if not isinstance(entry, dict) or set(entry) - {"role", "token"}:
            raise TokenFileError(f"token file {path}: [{name}] takes exactly role and token")
        role, token = entry.get("role"), entry.get("token")
        if role not in ROLES:
            raise TokenFileError(f"token file {path}: [{name}] role {role!r} is not one of {', '.join(ROLES)}")
        if not isinstance(token, str) or len(token) < 8:
            raise TokenFileError(f"token file {path}: [{name}] token must be a string of at least 8 characters")
        _add(out, token, name, role, f"token file {path}")
    return out


def tokens_from_env(environ=os.environ, legacy_env: str = "") -> dict[str, tuple[str, str]]:
    """``{token: (identity, role)}`` from ``LGF_TOKEN_<ROLE>[_<NAME>]`` and the legacy ``token_env``."""
    out: dict[str, tuple[str, str]] = {}
    for key, token in sorted(environ.items()):
        if not key.startswith(ENV_PREFIX) or not token:
            continue
        role, _, name = key[len(ENV_PREFIX):].lower().partition("_")
        if role not in ROLES:
            log.warning("%s: %r is not a role (%s); ignored", key, role, ", ".join(ROLES))
            continue
        _add(out, token, name or role, role, key)
    if legacy_env and environ.get(legacy_env):
        _add(out, environ[legacy_env], "token", "operator", legacy_env)
    return out


def _add(out: dict, token: str, name: str, role: str, where: str) -> None:
    if token in out and out[token][0] != name:
        raise TokenFileError(f"{where}: identity {name!r} has the same token as {out[token][0]!r}; "
                             "every identity needs its own")
    out[token] = (name, role)


class Guard:
    """Answers "may this request do that?" for the HTTP server."""

    def __init__(self, tokens: dict[str, tuple[str, str]], loopback_changes: bool):
        self.tokens = tokens
        self.loopback_changes = loopback_changes

    @classmethod
    def from_options(cls, http_options, policy, environ=os.environ) -> Guard:
        tokens = tokens_from_env(environ, getattr(http_options, "token_env", ""))
        if getattr(http_options, "token_file", ""):
            for token, who in read_token_file(http_options.token_file).items():
                _add(tokens, token, who[0], who[1], http_options.token_file)
        return cls(tokens, bool(getattr(policy, "loopback_changes", False)))

    def identify(self, authorization: str, client: str) -> Identity | Refusal:
        """The caller: from its bearer token, else from where it connects."""
        given = authorization.removeprefix("Bearer ").strip() if authorization else ""
        if given:
            found = None
            for token, who in self.tokens.items():  # every token compared, in constant time each
                if hmac.compare_digest(given.encode(), token.encode()):
                    found = who
            if found is None:
                return Refusal(401, "unknown bearer token")
            return Identity(found[0], found[1], "token")
        loopback = client in ("::1", "localhost") or client.startswith("127.")
        if loopback:
            changes = self.loopback_changes and not self.tokens
            return Identity("loopback", "operator" if changes else "viewer", "loopback")
        if self.tokens:
            return Refusal(401, "a bearer token is required from outside this host")
        return Identity("anonymous", "viewer", "anonymous")

    def authorize(self, authorization: str, client: str, role: str) -> Identity | Refusal:
        """The caller if it has ``role``, else why not (401 unknown caller, 403 role too low)."""
        who = self.identify(authorization, client)
        if isinstance(who, Refusal):
            return who
        if who.may(role):
            return who
        if who.via == "loopback":
            if self.tokens:
                return Refusal(401, f"this needs a bearer token with the {role} role")
            return Refusal(403, f"this needs the {role} role and loopback without a token may only read in "
                                "this environment: configure tokens (LGF_TOKEN_<ROLE>_<NAME> or [http] token_file)")
        return Refusal(403, f"{who.name} has the {who.role} role; this needs {role}")


def audit(spool_dir: str | None, who: Identity, action: str, **what) -> None:
    """Log a change with who made it, and append it to ``<spool_dir>/audit.jsonl``."""
    detail = " ".join(f"{k}={v}" for k, v in what.items())
    log.info("change by %s (%s via %s): %s %s", who.name, who.role, who.via, action, detail)
    if not spool_dir:
        return
    record = {"time": time.time(), "identity": who.name, "role": who.role, "via": who.via,
              "action": action, **what}
    try:
        path = Path(spool_dir) / AUDIT_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    except OSError as exc:  # the change is made; losing its record is logged, not fatal
        log.error("audit: cannot append to %s: %s", path, exc.strerror)
