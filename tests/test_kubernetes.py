"""lgf.kubernetes: this node's pods through the official ``kubernetes`` client, and what
``lgf.identity`` and the alert policy make of them.

No cluster runs here: the client talks to ``support.fakekube``, a local HTTP server answering the
requests lgf makes with API-server JSON of the real shape (a PodList, a ReplicaSet, a Node, a
chunked pod watch with ADDED, MODIFIED, BOOKMARK and DELETED events, a 410 Gone), and serving the
kubelet's read-only pod list.
"""

from __future__ import annotations

import copy
import json

import pytest

from lgf import config as cfg
from lgf.alerts import AlertEngine
from lgf.event import Event
from lgf.identity import Identity, ProcessIdentities, parse_environ, pod_fields, pod_naming, shown
from lgf.kubernetes import ApiPods, KubeletPods, KubernetesOptions, Pods, pod_of, pods_of
from lgf.stats import Stats
from support.fakekube import HERE, FakeKube
from support.wait import wait_until

UID = "7c5b2f0e-3a1d-4c6b-9e8f-0123456789ab"
CID = "4a1f0c9e2b3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7"
JOB_UID = "a3b2c1d0-e9f8-4a7b-8c6d-5e4f3a2b1c0d"
LEDGER_UID = "2d8e4c1a-7b3f-4e59-a6d0-93c5f1b2e847"


def fixture_pods() -> list[dict]:
    text = (HERE / "pods.json").read_text().replace("${POD_UID}", UID).replace("${CONTAINER_ID}", CID)
    return json.loads(text)["items"]


def test_pod_of_a_deployments_pod_without_the_api():
    """The kubelet's list has no ReplicaSets: the Deployment is the ReplicaSet's name less the
    pod-template-hash, as the Deployment controller names it."""
    pod = pod_of(fixture_pods()[0])
    assert (pod.uid, pod.name, pod.namespace, pod.node) == (UID, "checkout-7d9f8b6c4d-x2lqz", "shop", "node-a")
    assert (pod.owner_kind, pod.owner_name) == ("Deployment", "checkout")
    assert pod.containers == {CID: "api"} and pod.app() == "checkout"


def test_pod_of_other_owners_and_shapes():
    ledger = pod_of(fixture_pods()[1])
    assert (ledger.owner_kind, ledger.owner_name, ledger.app()) == ("StatefulSet", "ledger", "ledger")
    assert list(ledger.containers.values()) == ["ledger"]  # cri-o:// prefix removed from the id
    bare = pod_of({"metadata": {"uid": "u", "name": "debug", "namespace": "default"}})
    assert (bare.owner_kind, bare.owner_name, bare.app(), bare.containers) == ("", "", "", {})
    odd = copy.deepcopy(fixture_pods()[0])  # a ReplicaSet not made by a Deployment
    odd["metadata"]["labels"].pop("pod-template-hash")
    assert (pod_of(odd).owner_kind, pod_of(odd).owner_name) == ("ReplicaSet", "checkout-7d9f8b6c4d")
    assert pod_of(fixture_pods()[0], lambda ns, name: ("Deployment", "checkout-api")).owner_name == "checkout-api"


def test_options_are_checked():
    with pytest.raises(cfg.ConfigErrors, match="api_server"):
        cfg.validate({"kubernetes": {"enabled": True, "api_server": "127.0.0.1:8001"}}, {})
    conf = cfg.validate({"kubernetes": {"enabled": True, "node_name": "node-a"}}, {})
    assert conf.sections["kubernetes"].enabled
    assert pods_of(cfg.validate({}, {}).sections["kubernetes"]) is None  # off by default


def test_api_pods_list_watch_owner_zone_and_relist():
    """The real client against the recorded API: list by node, resolve a ReplicaSet's Deployment,
    read the node's zone, apply watch events, resume, and list again after 410 Gone."""
    with FakeKube(UID, CID) as api_server:
        api = ApiPods(KubernetesOptions(enabled=True, api_server=api_server.url, watch_timeout=1), "node-a")
        api.start()
        try:
            assert api.synced.wait(60), api_server.requests
            pod = api.pod(UID)
            assert (pod.name, pod.namespace, pod.owner_kind, pod.owner_name) == \
                ("checkout-7d9f8b6c4d-x2lqz", "shop", "Deployment", "checkout-api")
            assert pod.containers == {CID: "api"}
            assert api.zone == "eu-west-1b"
            # the recorded watch: a Job's pod added, then its container started; the StatefulSet's deleted
            wait_until(lambda: (p := api.pod(JOB_UID)) is not None and p.containers, 60, what="watched pod")
            assert (api.pod(JOB_UID).owner_kind, api.pod(JOB_UID).owner_name) == ("Job", "batch-28931040")
            assert api.pod(LEDGER_UID) is not None  # deleted, still known for its last stalls
            listed = api_server.asked("/api/v1/pods")
            assert listed[0] == {"fieldSelector": "spec.nodeName=node-a"}
            # pushed later: a label change reaches the cache
            moved = copy.deepcopy(fixture_pods()[0])
            moved["metadata"]["labels"]["app.kubernetes.io/name"] = "checkout-v2"
            moved["metadata"]["resourceVersion"] = "184490"
            api_server.push("MODIFIED", moved)
            wait_until(lambda: api.pod(UID).app() == "checkout-v2", 60, what="modified pod")
            # each watch resumes from the last resourceVersion seen, the bookmark's included
            watches = [q for q in api_server.asked("/api/v1/pods") if q.get("watch") == "true"]
            wait_until(lambda: len([q for q in api_server.asked("/api/v1/pods") if q.get("watch")]) >= 2,
                       60, what="a resumed watch")
            watches = [q for q in api_server.asked("/api/v1/pods") if q.get("watch") == "true"]
            assert watches[0]["resourceVersion"] == "184467" and watches[1]["resourceVersion"] == "184490"
            assert watches[0]["allowWatchBookmarks"] == "true"
            assert len(api_server.asked("/apis/apps/v1/namespaces/shop/replicasets/checkout-7d9f8b6c4d")) == 1
            # 410 Gone: listed again (the list brings back the original label)
            lists = len([q for q in api_server.asked("/api/v1/pods") if "watch" not in q])
            api_server.gone()
            wait_until(lambda: len([q for q in api_server.asked("/api/v1/pods") if "watch" not in q]) > lists,
                       60, what="a list after 410 Gone")
            wait_until(lambda: api.pod(UID).app() == "checkout", 60, what="the relisted pod")
            assert api.pod(JOB_UID) is not None  # not in the new list: deleted meanwhile, kept a while
        finally:
            api.stop()


def test_api_pods_survive_an_api_server_that_is_away():
    """No server: the watcher logs and retries; look-ups answer None, nothing raises."""
    api = ApiPods(KubernetesOptions(enabled=True, api_server="http://127.0.0.1:9", watch_timeout=1), "node-a")
    api.start()
    try:
        assert not api.synced.wait(0.5)
        assert api.pod(UID) is None
    finally:
        api.stop()


def test_kubelet_pod_list_read_on_a_miss_at_most_every_refresh():
    now = [0.0]
    with FakeKube(UID, CID) as kubelet:
        pods = KubeletPods(kubelet.url + "/pods", refresh=10, clock=lambda: now[0])
        wait_until(lambda: pods.pod(UID) is not None, what="the pod read from the kubelet's list")
        assert pods.pod(UID).owner_name == "checkout"
        assert pods.pod("0000") is None and pods.pod("0001") is None
        assert len(kubelet.asked("/pods")) == 1  # the misses within `refresh` read nothing
        now[0] += 10
        assert pods.pod("0000") is None
        wait_until(lambda: len(kubelet.asked("/pods")) == 2, what="a second read after `refresh`")
    bad = KubeletPods("http://127.0.0.1:9/pods")
    assert bad.pod(UID) is None  # logged, not raised


def test_a_hung_kubelet_does_not_hold_the_stalls_of_its_pods():
    """The miss's read runs on a thread of its own: while the kubelet does not answer, a stall of
    the pod passes without its name (no second request), and once the kubelet answers the pod is
    known without another miss reading again (``refresh`` has not passed)."""
    with FakeKube(UID, CID) as kubelet:
        kubelet.hold_kubelet()
        try:
            pods = KubeletPods(kubelet.url + "/pods", refresh=3600)
            assert pods.pod(UID) is None  # (the read is held: this returned without its answer)
            assert pods.pod(UID) is None and pods.pod("0000") is None
            wait_until(lambda: len(kubelet.asked("/pods")) == 1, what="the kubelet asked once")
        finally:
            kubelet.free_kubelet()
        wait_until(lambda: pods.pod(UID) is not None, what="the pod known once the kubelet answers")
        assert pods.pod(UID).owner_name == "checkout" and len(kubelet.asked("/pods")) == 1


def test_identity_takes_the_pod_from_kubernetes():
    with FakeKube(UID, CID) as kubelet:
        pods = Pods(kubelet=KubeletPods(kubelet.url + "/pods"), node="node-a")
        pods.kubelet.read()  # (known before the first stall: what is tested is what it maps to)
        ident = Identity(ns_pid=1, container_id=CID, container_runtime="containerd", pod_uid=UID,
                         pod_name="from-env", namespace="env-ns")
        fields, tags = pod_fields(pods, ident)
    assert fields == {"pod_name": "checkout-7d9f8b6c4d-x2lqz", "namespace": "shop", "node": "node-a",
                      "container_name": "api", "owner_kind": "Deployment", "owner_name": "checkout",
                      "app_label": "checkout", "pod_labels": fixture_pods()[0]["metadata"]["labels"]}
    assert tags == {"namespace": "shop", "node": "node-a"}  # no zone without the API server
    assert pod_fields(pods, Identity(pod_uid="")) == ({}, {})
    d = {"pid": 4242, **ident.fields(), **fields}
    assert shown(d) == [("ns_pid", "1"), ("container", "api (containerd)"),
                        ("pod", "shop/checkout-7d9f8b6c4d-x2lqz"), ("owner", "Deployment/checkout"),
                        ("node", "node-a")]


def test_pod_naming_from_the_environment():
    env = parse_environ(b"HOME=/\0POD_NAME=web-1\0POD_NAMESPACE=shop\0NODE_NAME=node-b\0"
                        b"OTEL_RESOURCE_ATTRIBUTES=k8s.container.name=web,k8s.pod.name=ignored,"
                        b"cloud.availability_zone=eu-west-1a\0SECRET=x\0")
    assert "SECRET" not in env and "HOME" not in env
    assert pod_naming(env) == {"pod_name": "web-1", "namespace": "shop", "node": "node-b",
                               "container_name": "web", "zone": "eu-west-1a"}
    assert pod_naming({"K8S_NAMESPACE": "ops"}) == {"namespace": "ops"}
    ident = Identity(**pod_naming(env))
    assert ident.tags() == {"namespace": "shop", "node": "node-b", "zone": "eu-west-1a"}


def test_service_name_order_beyla():
    """[alerts] services, OTEL_SERVICE_NAME / service.name, app.kubernetes.io/name or app label,
    the owner's name, the main module, comm."""
    engine = AlertEngine(cfg.validate({"lgf": {"spool_dir": "/nonexistent"},
                                       "alerts": {"services": {"named": "^api$"}}}, {}), Stats())
    full = {"otel_service": "checkout-api", "app_label": "checkout", "owner_name": "checkout-deploy"}
    assert engine.service_of(Event(comm="api", extra=dict(full))) == "named"
    assert engine.service_of(Event(comm="x", extra=dict(full))) == "checkout-api"
    assert engine.service_of(Event(comm="x", extra={**full, "otel_service": ""})) == "checkout"
    assert engine.service_of(Event(comm="x", extra={"owner_name": "checkout-deploy"})) == "checkout-deploy"
    assert engine.service_of(Event(comm="x")) == "x"


def test_an_event_and_its_alert_carry_the_pod(tmp_path):
    """ProcessIdentities with Pods: a process of this host (its cgroup names no pod) gets nothing;
    one whose identity names a known pod gets its fields and tags; the alert carries them."""
    with FakeKube(UID, CID) as kubelet:
        pods = Pods(kubelet=KubeletPods(kubelet.url + "/pods"), node="node-a")
        pods.kubelet.read()  # (known before the first stall: what is tested is what it maps to)
        ids = ProcessIdentities(pods=pods)
        ids._cache[999_999] = (None, 0, Identity(ns_pid=7, container_id=CID, pod_uid=UID))
        ids.clock = lambda: 1  # the cached entry is fresh: not read from /proc again
        ev = Event(pid=999_999, comm="app", cause="lock", duration_ns=120_000_000, goid=3,
                   ts="2026-12-03T12:00:00.000000000Z", tags={"team": "payments"})
        ids.apply(ev)
    assert ev.extra["pod_name"] == "checkout-7d9f8b6c4d-x2lqz" and ev.extra["owner_name"] == "checkout"
    assert ev.tags == {"namespace": "shop", "node": "node-a", "team": "payments"}
    now = [1_000_000_000]
    raw = {"lgf": {"spool_dir": str(tmp_path)}, "alerts": {"tags": {"team": "sre", "region": "eu"}}}
    engine = AlertEngine(cfg.validate(raw, {}), Stats(), clock=lambda: now[0])
    ev.start_ns, ev.end_ns = now[0] - ev.duration_ns, now[0]
    engine.observe(ev)
    assert ev.extra["service"] == "checkout"  # its app label: no OTEL name, no [alerts] services
    assert ev.tags["region"] == "eu" and ev.tags["team"] == "payments"  # config tags still apply
    now[0] += 60_000_000_000
    (alert,) = engine.due(now[0])
    for key in ("pod_name", "namespace", "owner_kind", "owner_name", "container_name", "node", "pod_uid"):
        assert alert.extra[key] == ev.extra[key], key
    assert alert.tags["namespace"] == "shop"


def test_a_pods_identity_in_stdout_wecom_and_alertmanager():
    """Where a person reads the stall: the pod's name, owner and node beside the host pid."""
    from lgf.sinks.alertmanager import annotations_of, labels_of
    from lgf.sinks.stdout import format_line
    from lgf.sinks.wecom_format import alert_lines

    ev = Event(pid=48213, goid=7, comm="app", cause="lock", duration_ns=120_000_000,
               ts="2026-12-03T12:00:00.000000000Z", stack_summary=["main.work"],
               extra={"ns_pid": 1, "container_id": CID, "container_runtime": "containerd", "pod_uid": UID,
                      "pod_name": "checkout-7d9f8b6c4d-x2lqz", "namespace": "shop", "container_name": "api",
                      "owner_kind": "Deployment", "owner_name": "checkout-api", "node": "node-a",
                      "service": "checkout"})
    assert ("pid=48213 ns_pid=1 container=api pod=shop/checkout-7d9f8b6c4d-x2lqz "
            "owner=Deployment/checkout-api node=node-a goid=7") in format_line(ev)
    text = "\n".join(alert_lines(ev.to_dict(), "text"))
    assert ("container api (containerd) · pod shop/checkout-7d9f8b6c4d-x2lqz · owner Deployment/checkout-api"
            " · node node-a") in text, text
    ann = annotations_of(ev.to_dict())
    assert (ann["pod"], ann["owner"], ann["node"], ann["container_name"]) == \
        ("shop/checkout-7d9f8b6c4d-x2lqz", "Deployment/checkout-api", "node-a", "api")
    assert "pod" not in labels_of(ev.to_dict(), "LgfStall")  # a restarted pod is not a new alert
