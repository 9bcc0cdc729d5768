"""``lgf silence add|list|expire|approve|deploy|loadtest``: silences on the running lgf, through its local HTTP API.

    lgf silence add cause=lock 'comm=~api-.*' --for 2h --comment "JIRA-12 lock fix rolling out"
    lgf silence add env=dev --until 2026-12-01T00:00:00Z
    lgf silence list [--json]
    lgf silence expire ID
    lgf silence deploy SERVICE          start SERVICE's "silence after deploy" window now
    lgf silence loadtest SERVICE        start SERVICE's "silence after load test" window now (test env)
    lgf silence approve ID              approve a pending silence someone else asked for (prod)

Where lgf listens: ``--url``, else ``[http] listen`` of ``--config``, else ``$LGF_URL``, else
``http://127.0.0.1:9464``. A token (``[http] token_env``) is read from the environment variable
that ``--token-env`` or the config names, else from ``$LGF_TOKEN``, and sent as a bearer token;
it is never printed. The token says who you are (``lgf.roles``): in prod a silence you add stays
pending until someone else with the approver role runs ``lgf silence approve ID``.
Going through the running lgf (not the file in spool_dir) means the change applies at once and
two writers never race on the file.

Exit codes: 0 ok, 1 lgf unreachable or it refused, 2 usage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request

DEFAULT_URL = "http://127.0.0.1:9464"


HELP = "add, list, expire or approve silences on the running lgf; note deploys and load tests"
DESCRIPTION = "Silences on the running lgf."
EPILOG = ("matchers: field=value field!=value field=~regex field!~regex\n"
          "  (any alert field: cause, service, comm, severity, env, top_frame, tags.team ...)\n"
          "examples:\n  lgf silence add cause=gc_stw service=batch --for 4h\n"
          "  lgf silence list\n  lgf silence expire 3f2a9c1b7d0e")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", help=f"lgf's HTTP address (default: from --config, $LGF_URL, {DEFAULT_URL})")
    p.add_argument("--config", help="plugins.toml of the running lgf (for [http] listen and token_env)")
    p.add_argument("--token-env", help="environment variable holding the API token")
    sub = p.add_subparsers(dest="action", required=True)
    a = sub.add_parser("add", help="add a silence")
    a.add_argument("matchers", nargs="+", metavar="MATCHER")
    when = a.add_mutually_exclusive_group(required=True)
    when.add_argument("--for", dest="duration", help='how long, e.g. "2h", "30m"')
    when.add_argument("--until", help="RFC 3339 end time")
    a.add_argument("--comment", default="")
    a.add_argument("--by", default=os.environ.get("USER", ""), help="who (default: $USER)")
    a = sub.add_parser("list", help="list active silences")
    a.add_argument("--json", action="store_true")
    a = sub.add_parser("expire", help="end a silence now")
    a.add_argument("id")
    a = sub.add_parser("deploy", help="start a service's silence-after-deploy window now")
    a.add_argument("service")
    a = sub.add_parser("loadtest", help="start a service's silence-after-load-test window now")
    a.add_argument("service")
    a = sub.add_parser("approve", help="approve a pending silence (approver role; not your own)")
    a.add_argument("id")


def _where(args) -> tuple[str, str]:
    """(base URL, token) from the flags, the config and the environment."""
    url, token_env = args.url, args.token_env
    if args.config:
        from lgf.config import parse_toml
        http = parse_toml(args.config).get("http") or {}
        if not url and http.get("listen"):
            url = "http://" + http["listen"]
        token_env = token_env or http.get("token_env")
    url = (url or os.environ.get("LGF_URL") or DEFAULT_URL).rstrip("/")
    return url, os.environ.get(token_env, "") if token_env else os.environ.get("LGF_TOKEN", "")


def _call(method: str, url: str, token: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"{}")
        except ValueError:
            return exc.code, {"error": exc.reason}


def _row(s: dict) -> str:
    state = "PENDING approval " if s.get("pending") else ""
    return (f"{s['id']:<14} {state}until {s.get('expires') or '(config)':<21} {s.get('silenced', 0):>6} held  "
            f"{' '.join(s['matchers'])}" + (f"  # {s['comment']}" if s.get("comment") else ""))


def run(args: argparse.Namespace) -> int:
    base, token = _where(args)
    try:
        if args.action == "add":
            code, out = _call("POST", base + "/api/silences", token, {
                "matchers": args.matchers, "duration": args.duration or "", "until": args.until or "",
                "comment": args.comment, "created_by": args.by})
        elif args.action == "list":
            code, out = _call("GET", base + "/api/silences", token)
        elif args.action == "expire":
            code, out = _call("DELETE", base + f"/api/silences/{args.id}", token)
        elif args.action == "approve":
            code, out = _call("POST", base + f"/api/silences/{args.id}/approve", token, {})
        elif args.action == "loadtest":
            code, out = _call("POST", base + "/api/loadtests", token, {"service": args.service})
        else:
            code, out = _call("POST", base + "/api/deploys", token, {"service": args.service})
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        print(f"lgf silence: cannot reach lgf at {base}: {reason} (is `lgf run` up? see --url/--config)",
              file=sys.stderr)
        return 1
    if code >= 400:
        print(f"lgf silence: lgf refused ({code}): {out.get('error', out)}", file=sys.stderr)
        return 1
    if args.action == "list":
        if args.json:
            print(json.dumps(out, indent=2))
        else:
            for s in out["silences"]:
                print(_row(s))
            print(f"{len(out['silences'])} active silence(s)", file=sys.stderr)
    elif args.action == "deploy":
        print(f"deploy of {out['service']} noted; its alerts are held for "
              f"{out['silence_after_deploy_ns'] / 1e9:.0f} s")
    elif args.action == "loadtest":
        print(f"load test of {out['service']} noted; its alerts are held for "
              f"{out['silence_after_loadtest_ns'] / 1e9:.0f} s")
    else:
        print(_row(out))
        if out.get("pending"):
            print(f"lgf silence: pending: it silences nothing until someone else with the approver role runs "
                  f"`lgf silence approve {out['id']}`", file=sys.stderr)
    return 0
