"""The official Kubernetes Python client against a running c4m.

Usage: client_suite.py KUBECONFIG

Runs the core cases of the kubectl suite through the client library:
create, read, list with label and field selectors, watch, replace, patch,
scale, delete, and the Status errors (404, 409, 422). Prints one "ok ..."
line per case; any failure raises, and the exit code is non-zero.
"""

import json
import sys

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

NS = "default"
LABELS = {"app": "pyweb"}


def expect_status(code, call):
    try:
        call()
    except ApiException as error:
        assert error.status == code, f"expected {code}, got {error.status}: {error.body}"
        return error
    raise AssertionError(f"expected HTTP {code}, the call succeeded")


def main(kubeconfig):
    config.load_kube_config(config_file=kubeconfig)
    core = client.CoreV1Api()
    apps = client.AppsV1Api()

    # Create: a ConfigMap, a Deployment using it, a Service.
    core.create_namespaced_config_map(
        NS, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="pyweb"), data={"GREETING": "hi"})
    )
    deployment = client.V1Deployment(
        metadata=client.V1ObjectMeta(name="pyweb", labels=LABELS),
        spec=client.V1DeploymentSpec(
            replicas=2,
            selector=client.V1LabelSelector(match_labels=LABELS),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=LABELS),
                spec=client.V1PodSpec(
                    containers=[
                        client.V1Container(
                            name="web",
                            image="pyweb",
                            command=["sleep", "3600"],
                            env_from=[client.V1EnvFromSource(config_map_ref=client.V1ConfigMapEnvSource(name="pyweb"))],
                            resources=client.V1ResourceRequirements(requests={"cpu": "100m", "memory": "64Mi"}),
                        )
                    ]
                ),
            ),
        ),
    )
    created = apps.create_namespaced_deployment(NS, deployment)
    assert created.metadata.uid and created.metadata.resource_version
    core.create_namespaced_service(
        NS,
        client.V1Service(
            metadata=client.V1ObjectMeta(name="pyweb"),
            spec=client.V1ServiceSpec(selector=LABELS, ports=[client.V1ServicePort(port=80, target_port=8080)]),
        ),
    )
    print("ok create")

    # 409 AlreadyExists, 404 NotFound, 422 Invalid.
    error = expect_status(409, lambda: apps.create_namespaced_deployment(NS, deployment))
    assert "AlreadyExists" in error.body, error.body
    error = expect_status(404, lambda: apps.read_namespaced_deployment("nope", NS))
    status = json.loads(error.body)
    assert status["message"] == 'deployments "nope" not found', status
    assert status["details"] == {"kind": "deployments", "name": "nope"}, status
    bad = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="Bad_Name"))
    expect_status(422, lambda: core.create_namespaced_config_map(NS, bad))
    print("ok errors")

    # Watch: both instances become Running and Ready.
    ready = set()
    stream = watch.Watch()
    for event in stream.stream(core.list_namespaced_pod, NS, label_selector="app=pyweb", timeout_seconds=60):
        pod = event["object"]
        conditions = pod.status.conditions or []
        if pod.status.phase == "Running" and any(c.type == "Ready" and c.status == "True" for c in conditions):
            ready.add(pod.metadata.name)
        if len(ready) == 2:
            stream.stop()
    assert len(ready) == 2, f"only {ready} became ready"
    print("ok watch")

    # Read and list, with label and field selectors.
    read = apps.read_namespaced_deployment("pyweb", NS)
    assert read.spec.replicas == 2
    pods = core.list_namespaced_pod(NS, label_selector="app=pyweb").items
    assert {p.metadata.name for p in pods} == ready, pods
    assert core.list_namespaced_pod(NS, label_selector="app=other").items == []
    node = pods[0].spec.node_name
    on_node = core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node}").items
    assert pods[0].metadata.name in {p.metadata.name for p in on_node}
    print("ok list")

    # Replace with a stale resourceVersion conflicts; with the current one it works.
    current = core.read_namespaced_config_map("pyweb", NS)
    current.data["GREETING"] = "hello"
    core.replace_namespaced_config_map("pyweb", NS, current)
    expect_status(409, lambda: core.replace_namespaced_config_map("pyweb", NS, current))
    assert core.read_namespaced_config_map("pyweb", NS).data["GREETING"] == "hello"
    print("ok replace")

    # Patch (strategic merge, the client's default for dicts) and scale.
    apps.patch_namespaced_deployment("pyweb", NS, {"metadata": {"labels": {"tier": "front"}}})
    assert apps.read_namespaced_deployment("pyweb", NS).metadata.labels["tier"] == "front"
    apps.patch_namespaced_deployment_scale("pyweb", NS, {"spec": {"replicas": 3}})
    assert apps.read_namespaced_deployment_scale("pyweb", NS).spec.replicas == 3
    print("ok patch")

    # Delete: the Deployment's instances go with it.
    apps.delete_namespaced_deployment("pyweb", NS)
    core.delete_namespaced_service("pyweb", NS)
    core.delete_namespaced_config_map("pyweb", NS)
    expect_status(404, lambda: apps.read_namespaced_deployment("pyweb", NS))
    stream = watch.Watch()
    remaining = core.list_namespaced_pod(NS, label_selector="app=pyweb").items
    if remaining:
        for _ in stream.stream(core.list_namespaced_pod, NS, label_selector="app=pyweb", timeout_seconds=60):
            if not core.list_namespaced_pod(NS, label_selector="app=pyweb").items:
                stream.stop()
    assert core.list_namespaced_pod(NS, label_selector="app=pyweb").items == []
    print("ok delete")


if __name__ == "__main__":
    main(sys.argv[1])
