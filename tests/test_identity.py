"""Process identity (lgf.identity): cgroup paths of each runtime, NSpid, the OTEL environment,
the cache, and the service name the alert policy derives from it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

from lgf import config as cfg
from lgf.alerts import AlertEngine
from lgf.event import Event
from lgf.golang.procfs import process_binary
from lgf.identity import (
    Identity,
    ProcessIdentities,
    otel_naming,
    parse_cgroup,
    parse_environ,
    parse_nspid,
    parse_resource_attributes,
)
from lgf.stats import Stats

CID = "4a1f0c9e2b3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7"
UID = "7c5b2f0e-3a1d-4c6b-9e8f-0123456789ab"
UID_ = UID.replace("-", "_")

V1_OTHER = "".join(f"{n}:{c}:/\n" for n, c in ((11, "pids"), (10, "cpuset")))


@pytest.mark.parametrize("text, expected", [
    # containerd under Kubernetes, cgroup v2, systemd driver
    (f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/"
     f"cri-containerd-{CID}.scope\n", (CID, "containerd", UID)),
    # containerd under Kubernetes, cgroup v1, cgroupfs driver
    (V1_OTHER + f"4:memory:/kubepods/burstable/pod{UID}/{CID}\n"
     f"1:name=systemd:/kubepods/burstable/pod{UID}/{CID}\n", (CID, "containerd", UID)),
    # containerd under Kubernetes, besteffort, v1 systemd driver
    (f"5:cpu,cpuacct:/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/"
     f"cri-containerd-{CID}.scope\n", (CID, "containerd", UID)),
    # CRI-O, cgroup v2, guaranteed pod (no QoS slice)
    (f"0::/kubepods.slice/kubepods-pod{UID_}.slice/crio-{CID}.scope\n", (CID, "cri-o", UID)),
    # CRI-O's conmon is not the container
    (f"0::/kubepods.slice/kubepods-pod{UID_}.slice/crio-conmon-{CID}.scope\n", ("", "", UID)),
    # Docker, cgroup v2 (systemd)
    (f"0::/system.slice/docker-{CID}.scope\n", (CID, "docker", "")),
    # Docker, cgroup v1 (cgroupfs)
    (V1_OTHER + f"4:memory:/docker/{CID}\n", (CID, "docker", "")),
    # Podman, rootful, cgroup v2; Podman 4 adds /container below the scope
    (f"0::/machine.slice/libpod-{CID}.scope/container\n", (CID, "podman", "")),
    # Podman, rootless
    (f"0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{CID}.scope\n",
     (CID, "podman", "")),
    # Podman, cgroupfs
    (f"0::/libpod_parent/libpod-{CID}\n", (CID, "podman", "")),
    # nerdctl (containerd without Kubernetes)
    (f"0::/system.slice/nerdctl-{CID}.scope\n", (CID, "containerd", "")),
    # a host process: v2 and v1
    ("0::/user.slice/user-0.slice/session-3.scope\n", ("", "", "")),
    ("12:memory:/\n0::/\n", ("", "", "")),
    ("", ("", "", "")),
])
def test_parse_cgroup(text, expected):
    assert parse_cgroup(text) == expected


def test_parse_nspid():
    assert parse_nspid("Name:\tapp\nNSpid:\t48213\t1\nNStgid:\t48213\t1\n") == 1
    assert parse_nspid("NSpid:\t4242\n") == 4242
    assert parse_nspid("Name:\tx\n") == 0


def test_otel_environment():
    env = parse_environ(b"PATH=/bin\0OTEL_SERVICE_NAME=checkout-api\0"
                        b"OTEL_RESOURCE_ATTRIBUTES=service.name=other,deployment.environment=prod%20eu\0")
    assert otel_naming(env) == ("checkout-api", "prod eu")
    assert otel_naming({"OTEL_RESOURCE_ATTRIBUTES": "service.name=cart,deployment.environment.name=dev"}) \
        == ("cart", "dev")
    assert otel_naming({}) == ("", "")
    assert parse_resource_attributes("a=1, b = 2 ,bad,=x") == {"a": "1", "b": "2"}


def test_identity_fields_and_tags():
    ident = Identity(1, CID, "containerd", UID, "checkout-api", "prod", "v1.2.3")
    assert ident.fields() == {"ns_pid": 1, "container_id": CID, "container_runtime": "containerd",
                              "pod_uid": UID, "otel_service": "checkout-api"}
    assert ident.tags() == {"version": "v1.2.3", "deployment.environment": "prod"}
    assert Identity(5).fields() == {"ns_pid": 5}


def test_identity_of_a_process_read_once_and_applied():
    env = {**os.environ, "OTEL_SERVICE_NAME": "sleeper",
           "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=staging"}
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=env)
    try:
        # Until the child has exec'd, /proc/PID/environ is still its parent's: wait for its own.
        deadline = time.monotonic() + 60
        while b"OTEL_SERVICE_NAME=sleeper" not in open(f"/proc/{proc.pid}/environ", "rb").read():
            assert time.monotonic() < deadline, "the child never exec'd"
            time.sleep(0.01)
        now = [0]
        ids = ProcessIdentities(clock=lambda: now[0])
        ev = Event(pid=proc.pid, comm="python3", tags={"version": "kept"})
        ids.apply(ev)
        seen = (ev.extra, ev.tags, ids.of(proc.pid), open(f"/proc/{proc.pid}/environ", "rb").read()[-200:])
        assert ev.extra.get("ns_pid") == proc.pid, seen
        assert ev.extra.get("otel_service") == "sleeper", seen
        assert ev.tags == {"version": "kept", "deployment.environment": "staging"}, seen
        first = ids.of(proc.pid)
        assert ids.of(proc.pid) is first  # cached: not read again
        now[0] += 2_000_000_000
        assert ids.of(proc.pid) is first  # start time checked, same process
        replayed = Event(pid=proc.pid, extra={"ns_pid": 9})
        ids.apply(replayed)
        assert replayed.extra == {"ns_pid": 9}
    finally:
        proc.kill()
        proc.wait()


def test_service_name_order(tmp_path):
    """[alerts] services first, then OTEL, then the module, then comm."""
    raw = {"lgf": {"spool_dir": str(tmp_path)}, "alerts": {"services": {"named": "^api$"}}}
    engine = AlertEngine(cfg.validate(raw, {}), Stats())
    assert engine.service_of(Event(comm="api", extra={"otel_service": "checkout-api"})) == "named"
    assert engine.service_of(Event(comm="other", extra={"otel_service": "checkout-api"})) == "checkout-api"
    assert engine.service_of(Event(comm="other")) == "other"


def test_process_binary_of_a_deleted_executable(tmp_path):
    exe = tmp_path / "sleep"
    shutil.copy(shutil.which("sleep"), exe)
    proc = subprocess.Popen([str(exe), "60"])
    try:
        assert process_binary(proc.pid) == str(exe)
        exe.unlink()
        assert process_binary(proc.pid) == f"/proc/{proc.pid}/exe"
        shutil.copy(shutil.which("true"), exe)  # a deploy put another file at the same path
        assert process_binary(proc.pid, str(exe)) == f"/proc/{proc.pid}/exe"
    finally:
        proc.kill()
        proc.wait()
    assert process_binary(proc.pid, str(exe) + " (deleted)") is None


def _contained_stall() -> Event:
    return Event(pid=48213, goid=7, comm="app", cause="lock", duration_ns=120_000_000,
                 ts="2026-12-03T12:00:00.000000000Z", stack_summary=["main.work"],
                 extra={"ns_pid": 1, "container_id": CID, "container_runtime": "containerd",
                        "pod_uid": UID, "service": "checkout-api"})


def test_identity_where_the_pid_is_shown():
    from lgf.sinks.stdout import format_line
    from lgf.sinks.wecom_format import alert_lines
    from lgf.ui.history import StallHistory
    from lgf.ui.page import stalls_table

    ev = _contained_stall()
    line = format_line(ev)
    assert f"pid=48213 ns_pid=1 container={CID[:12]} pod={UID} goid=7" in line
    text = "\n".join(alert_lines(ev.to_dict(), "text"))
    assert (f"pid 48213 · pid in its namespace 1 · container {CID[:12]} (containerd) · pod {UID}"
            in text), text
    history = StallHistory()
    history.add(ev)
    html = stalls_table(history.records(), first_open=False)
    assert "ns_pid 1" in html and CID[:12] in html and UID in html
    from lgf.ui.page import render_page
    ev.tags = {"namespace": "shop", "version": "v1.4.2", "zone": "eu-west-1b", "team": "x"}
    ev.extra.update(pod_name="checkout-7d9f8b6c4d-x2lqz", namespace="shop", owner_kind="Deployment",
                    owner_name="checkout-api")
    history.add(ev)
    page = render_page({"env": "prod"}, history.records(), now=0)
    assert "namespace <b>shop</b> · version <b>v1.4.2</b> · zone <b>eu-west-1b</b>" in page
    assert "pod shop/checkout-7d9f8b6c4d-x2lqz" in page and "owner Deployment/checkout-api" in page
    host = Event(pid=4242, goid=7, comm="api", extra={"ns_pid": 4242})
    assert "ns_pid" not in format_line(host)  # outside a container: nothing added


def test_an_alert_carries_its_worst_stalls_identity(tmp_path):
    raw = {"lgf": {"spool_dir": str(tmp_path), "threshold": "50ms", "report_interval": "10s"}}
    now = [1_000_000_000]
    engine = AlertEngine(cfg.validate(raw, {}), Stats(), clock=lambda: now[0])
    ev = _contained_stall()
    ev.start_ns, ev.end_ns = now[0] - ev.duration_ns, now[0]
    ev.extra["otel_service"] = "checkout-api"
    del ev.extra["service"]
    engine.observe(ev)
    now[0] += 60_000_000_000
    (alert,) = engine.due(now[0])
    assert alert.extra["service"] == "checkout-api"
    for key in ("ns_pid", "container_id", "container_runtime", "pod_uid", "otel_service"):
        assert alert.extra[key] == ev.extra[key], key


def test_version_of_a_binary():
    from lgf.identity import version_of_binary

    assert version_of_binary(None) == "" and version_of_binary("/nonexistent") == ""
    assert version_of_binary(sys.executable) == ""  # not Go


def test_alertmanager_annotations_carry_the_identity():
    from lgf.sinks.alertmanager import annotations_of, labels_of

    d = _contained_stall().to_dict()
    ann = annotations_of(d)
    assert ann["ns_pid"] == "1" and ann["container_id"] == CID and ann["pod_uid"] == UID
    assert ann["container_runtime"] == "containerd"
    assert "container_id" not in labels_of(d, "LgfStall")  # a new container is not a new alert


class _Histograms:
    """A source at its boundary: the rows its histograms() returns (labels as the BPF source sets
    them), first of a live process, then folded after it exited (pid "", ``lgf.histories``)."""

    def __init__(self, rows):
        self.rows = rows

    def histograms(self):
        return self.rows


def test_metrics_name_a_process_as_its_alerts_do_and_keep_the_labels_after_it_exits(tmp_path):
    """/metrics: service from the OTEL environment (not the comm), namespace from the pod's
    environment; a folded row of the exited process keeps both (its series must not move)."""
    from lgf.http import LgfCollector

    env = {**os.environ, "OTEL_SERVICE_NAME": "checkout-api", "POD_NAMESPACE": "shop"}
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=env)
    try:
        deadline = time.monotonic() + 60
        while b"OTEL_SERVICE_NAME=checkout-api" not in open(f"/proc/{proc.pid}/environ", "rb").read():
            assert time.monotonic() < deadline, "the child never exec'd"
            time.sleep(0.01)
        engine = AlertEngine(cfg.validate({"lgf": {"spool_dir": str(tmp_path)}}, {}), Stats())
        engine.identities = ProcessIdentities()
        row = {"labels": {"pid": str(proc.pid), "comm": "python3", "exe": sys.executable, "stall": "park",
                          "wait_reason": "chan receive"}, "log2_us": [0, 2, 1]}
        source = _Histograms([row])
        collector = LgfCollector(Stats(), [source], engine)

        def labels():
            (fam,) = [f for f in collector.collect() if f.name == "lgf_stall_duration_seconds"]
            return {(s.labels["service"], s.labels["namespace"]) for s in fam.samples}

        assert labels() == {("checkout-api", "shop")}
    finally:
        proc.kill()
        proc.wait()
    source.rows = [{**row, "labels": {**row["labels"], "pid": ""}}]
    assert labels() == {("checkout-api", "shop")}
    engine.identities = None  # a host without identities (lgf replay): comm, no namespace
    fresh = LgfCollector(Stats(), [source], engine)
    (fam,) = [f for f in fresh.collect() if f.name == "lgf_stall_duration_seconds"]
    assert {(s.labels["service"], s.labels["namespace"]) for s in fam.samples} == {("python3", "")}
