"""A local stand-in for a Kubernetes API server and a kubelet, for the tests of ``lgf.kubernetes``.

No cluster runs where lgf is developed. This server answers the few requests lgf makes, with JSON
of the shape the API server sends (``tests/support/kube/``: a PodList, a ReplicaSet, a Node, and
the lines of a pod watch, written after ``kubectl get -o json`` and ``kubectl get --watch
--output-watch-events -o json`` output; UIDs and container ids are filled in per test):

    GET /api/v1/pods?fieldSelector=spec.nodeName=N          the PodList (only N's pods)
    GET /api/v1/pods?watch=true&resourceVersion=...         chunked watch events: the recorded
                                                            ones on the first watch, then whatever
                                                            the test pushes (``push``); a
                                                            ``gone()`` makes the next watch answer
                                                            410 Gone, as an etcd compaction does
    GET /apis/apps/v1/namespaces/NS/replicasets/NAME        the ReplicaSet (404 for another)
    GET /api/v1/nodes/N                                     the Node
    GET /pods                                               the kubelet's read-only pod list

Every request is recorded (``requests``: path and query) for the tests to check what was asked.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

HERE = Path(__file__).parent / "kube"


def _load(name: str, subst: dict[str, str]) -> str:
    text = (HERE / name).read_text()
    for key, value in subst.items():
        text = text.replace("${" + key + "}", value)
    return text


class FakeKube:
    """The server (see the module docstring); ``url`` once started; a context manager."""

    def __init__(self, pod_uid: str, container_id: str, node: str = "node-a"):
        subst = {"POD_UID": pod_uid, "CONTAINER_ID": container_id}
        self.node = node
        self.pods = json.loads(_load("pods.json", subst))
        self.replicaset = json.loads(_load("replicaset.json", subst))
        self.node_obj = json.loads(_load("node.json", subst))
        self.recorded_watch = [ln for ln in _load("watch.jsonl", subst).splitlines() if ln.strip()]
        self.requests: list[tuple[str, dict]] = []
        self.watches = 0
        self._events: queue.Queue[str] = queue.Queue()
        self._gone = threading.Event()
        self._closing = threading.Event()
        self._kubelet_free = threading.Event()
        self._kubelet_free.set()
        self._server: ThreadingHTTPServer | None = None

    # -- what a test does -------------------------------------------------------------------------

    def push(self, kind: str, pod: dict) -> None:
        """Send a watch event to the open (or next) watch."""
        self._events.put(json.dumps({"type": kind, "object": pod}))

    def gone(self) -> None:
        """The next watch answers with a 410 Gone error event (its resourceVersion is too old)."""
        self._gone.set()

    def hold_kubelet(self) -> None:
        """The kubelet's pod list answers only once :meth:`free_kubelet` is called (a kubelet
        that hangs)."""
        self._kubelet_free.clear()

    def free_kubelet(self) -> None:
        self._kubelet_free.set()

    def asked(self, path: str) -> list[dict]:
        return [q for p, q in self.requests if p == path]

    # -- the server -------------------------------------------------------------------------------

    def __enter__(self) -> FakeKube:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                url = urlsplit(self.path)
                q = {k: v[-1] for k, v in parse_qs(url.query).items()}
                fake.requests.append((url.path, q))
                if url.path == "/api/v1/pods" and q.get("watch", "").lower() == "true":
                    return fake._watch(self, q)
                if url.path == "/pods":
                    fake._kubelet_free.wait(30)
                if url.path in ("/api/v1/pods", "/pods"):
                    return self._json(200, fake._listed(q.get("fieldSelector", "")))
                rs = fake.replicaset["metadata"]
                if url.path == f"/apis/apps/v1/namespaces/{rs['namespace']}/replicasets/{rs['name']}":
                    return self._json(200, fake.replicaset)
                if url.path == f"/api/v1/nodes/{fake.node}":
                    return self._json(200, fake.node_obj)
                return self._json(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                        "message": f"{url.path} not found", "reason": "NotFound",
                                        "code": 404})

            def _json(self, code: int, obj: dict) -> None:
                body = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def chunk(self, line: str) -> None:
                data = (line + "\n").encode()
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        return self

    def __exit__(self, *exc) -> None:
        self._closing.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def _listed(self, selector: str) -> dict:
        out = dict(self.pods)
        if selector.startswith("spec.nodeName="):
            node = selector.partition("=")[2]
            out["items"] = [p for p in self.pods["items"] if p["spec"].get("nodeName") == node]
        return out

    def _watch(self, handler, q: dict) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        self.watches += 1
        try:
            if self._gone.is_set():
                self._gone.clear()
                handler.chunk(json.dumps({"type": "ERROR", "object": {
                    "kind": "Status", "apiVersion": "v1", "status": "Failure",
                    "message": f"too old resource version: {q.get('resourceVersion')} (184500)",
                    "reason": "Expired", "code": 410}}))
            else:
                if self.watches == 1:
                    for line in self.recorded_watch:
                        handler.chunk(line)
                until = time.monotonic() + float(q.get("timeoutSeconds", "30"))
                while not self._closing.is_set() and time.monotonic() < until and not self._gone.is_set():
                    try:
                        handler.chunk(self._events.get(timeout=0.05))
                    except queue.Empty:
                        continue
            handler.wfile.write(b"0\r\n\r\n")
            handler.wfile.flush()
        except OSError:  # the client closed the watch
            pass
        handler.close_connection = True
