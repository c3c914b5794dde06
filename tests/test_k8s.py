"""The Kubernetes manifests of deploy/k8s: valid against the API's schemas, and consistent.

No cluster runs here: kubernetes-validate checks each resource offline against the schemas
it ships (Kubernetes 1.37, strict: an unknown field is an error too).
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from chaosemergence.app.settings import SystemSettings

K8S = Path(__file__).resolve().parent.parent / "deploy" / "k8s"
VERSION = "1.37.0"


def _documents() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def _one(kind: str, component: str) -> dict[str, Any]:
    found = [
        d
        for d in _documents()
        if d["kind"] == kind and d["metadata"]["labels"]["app.kubernetes.io/component"] == component
    ]
    assert len(found) == 1, f"one {kind} for the {component}, found {len(found)}"
    return found[0]


@pytest.mark.parametrize("doc", _documents(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_every_manifest_is_valid_against_the_kubernetes_schemas(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, VERSION, strict=True)


def test_kustomization_lists_every_manifest() -> None:
    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    present = sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(listed) == present


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("spec", "replicas"), "four"),  # wrong type
        (("spec", "replica"), 4),  # a misspelt field: strict refuses what it does not know
        (("spec", "template", "spec", "containers"), [{"image": "x"}]),  # no container name
    ],
)
def test_a_broken_manifest_is_refused(path: tuple[str, ...], value: object) -> None:
    """The validator the suite relies on does fail: break the cells' StatefulSet each way."""
    broken = copy.deepcopy(_one("StatefulSet", "cell"))
    target = broken
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSION, strict=True)


def test_gateway_lists_every_cell_pod_by_its_stable_name() -> None:
    """replicas, the cells' --cells and the gateway's --cell-url list must agree."""
    cells = _one("StatefulSet", "cell")
    service = _one("Service", "cell")
    gateway = _one("Deployment", "gateway")
    gateway_service = _one("Service", "gateway")
    replicas = cells["spec"]["replicas"]
    assert cells["spec"]["serviceName"] == service["metadata"]["name"]
    assert service["spec"]["clusterIP"] == "None"
    port = service["spec"]["ports"][0]["port"]
    command = " ".join(cells["spec"]["template"]["spec"]["containers"][0]["args"])
    assert re.search(rf"--cells {replicas}\b", command)
    assert f"--port {port}" in command
    gw_port = gateway_service["spec"]["ports"][0]["port"]
    assert f"--gateway-url http://{gateway_service['metadata']['name']}:{gw_port}" in command

    args = gateway["spec"]["template"]["spec"]["containers"][0]["args"]
    urls = [a.removeprefix("--cell-url=") for a in args if a.startswith("--cell-url=")]
    name, headless = cells["metadata"]["name"], service["metadata"]["name"]
    assert urls == [f"http://{name}-{i}.{headless}:{port}" for i in range(replicas)]
    SystemSettings(cells=len(urls), cell_urls=tuple(urls))  # what serve will accept
