"""deploy/: the systemd unit and the Kubernetes manifest, checked by what can check them here.

- the unit: ``systemd-analyze verify`` (syntax, directives, that ExecStart's binary runs), with the
  install path pointed at this checkout's lgf; any message it prints counts as a failure, since it
  only warns ("ignoring") about a misspelt setting and still exits 0;
- the manifest: every document against the Kubernetes OpenAPI schemas (kubernetes-validate ships
  them; strict, so a misspelt field fails), then what the schema cannot know: the DaemonSet runs
  in the host's PID namespace, privileged, with BTF, tracefs, headers and the spool mounted from
  the host, its selector matches its pods, and the ConfigMap's plugins.toml passes ``lgf check``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from support.cli import lgf
from support.gobuild import ROOT

DEPLOY = ROOT / "deploy"
K8S_VERSION = "1.30"


def test_systemd_unit_verifies(tmp_path):
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing (Debian's systemd package)"
    unit = (DEPLOY / "lgf.service").read_text()
    assert "/opt/lgf/bin/lgf run /etc/lgf/plugins.toml" in unit
    here = Path(sys.executable).parent / "lgf"
    (tmp_path / "lgf.service").write_text(unit.replace("/opt/lgf/bin/lgf", str(here)))
    done = subprocess.run([analyze, "verify", str(tmp_path / "lgf.service")], capture_output=True, text=True)
    assert done.returncode == 0 and not (done.stdout + done.stderr).strip(), done.stdout + done.stderr


def test_systemd_verify_catches_a_misspelt_setting(tmp_path):
    """The check above can fail: a misspelt value is reported (on stderr, exit 0)."""
    here = Path(sys.executable).parent / "lgf"
    unit = (DEPLOY / "lgf.service").read_text().replace("/opt/lgf/bin/lgf", str(here))
    (tmp_path / "lgf.service").write_text(unit.replace("Type=simple", "Type=simpel"))
    done = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "lgf.service")],
                          capture_output=True, text=True)
    assert "simpel" in done.stderr


def _docs() -> list[dict]:
    return [d for d in yaml.safe_load_all((DEPLOY / "daemonset.yaml").read_text()) if d]


def test_manifest_matches_the_kubernetes_schemas():
    docs = _docs()
    assert [d["kind"] for d in docs] == ["Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding",
                                         "ConfigMap", "DaemonSet"]
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_schema_check_refuses_a_misspelt_field():
    ds = _docs()[-1]
    ds["spec"]["template"]["spec"]["containers"][0]["securityContext"] = {"privilegd": True}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(ds, K8S_VERSION, strict=True)


def test_daemonset_gives_lgf_what_it_needs(tmp_path):
    *_, cm, ds = _docs()
    pod = ds["spec"]["template"]["spec"]
    assert ds["spec"]["selector"]["matchLabels"].items() <= ds["spec"]["template"]["metadata"]["labels"].items()
    assert pod["hostPID"] is True
    (container,) = pod["containers"]
    assert container["securityContext"]["privileged"] is True
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert {m["name"] for m in mounts.values()} <= volumes.keys()
    for path in ("/sys/kernel/btf", "/sys/kernel/tracing", "/lib/modules", "/usr/src", "/var/lib/lgf"):
        assert path in mounts, f"{path} is not mounted"
        assert volumes[mounts[path]["name"]]["hostPath"]["path"] == path
    assert not mounts["/var/lib/lgf"].get("readOnly"), "the spool must be writable"
    # The config lgf reads is the ConfigMap's, and it is a valid one.
    config_mount = mounts["/etc/lgf"]
    assert volumes[config_mount["name"]]["configMap"]["name"] == cm["metadata"]["name"]
    assert container["args"] == ["/etc/lgf/plugins.toml"] and "plugins.toml" in cm["data"]
    toml = cm["data"]["plugins.toml"].replace('"/var/lib/lgf"', f'"{tmp_path / "spool"}"')
    (tmp_path / "plugins.toml").write_text(toml)
    done = lgf("check", str(tmp_path / "plugins.toml"))
    assert done.returncode == 0, done.stderr


def test_rbac_lets_lgf_read_what_kubernetes_section_asks_and_nothing_more():
    """[kubernetes] reads pods (list + watch by node), ReplicaSets (a pod's Deployment) and its
    node (zone), through the DaemonSet's service account; read-only verbs only."""
    _, sa, role, binding, cm, ds = _docs()
    pod = ds["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == sa["metadata"]["name"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert {"kind": "ServiceAccount", "name": sa["metadata"]["name"],
            "namespace": sa["metadata"]["namespace"]} in binding["subjects"]
    granted = {(group, res): set(rule["verbs"]) for rule in role["rules"]
               for group in rule["apiGroups"] for res in rule["resources"]}
    assert granted == {("", "pods"): {"get", "list", "watch"},
                       ("apps", "replicasets"): {"get", "list", "watch"}, ("", "nodes"): {"get"}}
    (container,) = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert "[kubernetes]\nenabled = true" in cm["data"]["plugins.toml"]
