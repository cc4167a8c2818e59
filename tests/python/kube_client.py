"""The official Python `kubernetes` client against the simulated cluster: what a Python
controller or script does, with the client's own typed models judging every answer.

Usage: kube_client.py KUBECONFIG. Prints one line per check; exits non-zero on the first
failure (the client raises when an answer does not fit its model).
"""
import sys
import time

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException


def main() -> None:
    config.load_kube_config(config_file=sys.argv[1])
    core = client.CoreV1Api()
    apps = client.AppsV1Api()

    # A ConfigMap: created, read, patched; no spec, so no generation; DELETE answers a Status.
    cm = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="py-settings"), data={"mode": "a"})
    created = core.create_namespaced_config_map("staging", cm)
    assert created.metadata.generation is None, created.metadata.generation
    patched = core.patch_namespaced_config_map("py-settings", "staging", {"data": {"mode": "b"}})
    assert patched.data == {"mode": "b"}, patched.data
    # The client types this answer loosely (the OpenAPI says "object"): it must be a Status.
    status = core.delete_namespaced_config_map("py-settings", "staging")
    assert status.get("kind") == "Status", status
    assert status["status"] == "Success" and status["details"]["name"] == "py-settings", status
    try:
        core.read_namespaced_config_map("py-settings", "staging")
        raise AssertionError("the ConfigMap is still there")
    except ApiException as e:
        assert e.status == 404, e.status
    print("configmap: create, patch, delete (Status), 404 after")

    # A Deployment: generation 1, then 2 after a spec change; scaled through the subresource.
    body = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "py-web"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "py-web"}},
                 "template": {"metadata": {"labels": {"app": "py-web"}},
                              "spec": {"containers": [{"name": "web", "image": "nginx:1.25"}]}}},
    }
    d = apps.create_namespaced_deployment("staging", body)
    assert d.metadata.generation == 1, d.metadata.generation
    scale = apps.patch_namespaced_deployment_scale("py-web", "staging", {"spec": {"replicas": 2}})
    assert scale.spec.replicas == 2, scale
    d = apps.read_namespaced_deployment("py-web", "staging")
    assert d.metadata.generation == 2, d.metadata.generation
    deadline = time.time() + 30
    w = watch.Watch()
    for event in w.stream(apps.list_namespaced_deployment, "staging",
                          field_selector="metadata.name=py-web", timeout_seconds=30):
        s = event["object"].status
        if (s.ready_replicas or 0) == 2 and s.observed_generation == 2:
            w.stop()
            break
        assert time.time() < deadline, "the deployment never became ready"
    print("deployment: generations 1 and 2, scaled, watched to ready")

    # Pods: listed by label; a DELETE of a pod answers the pod (graceful deletion).
    pods = core.list_namespaced_pod("staging", label_selector="app=py-web").items
    assert len(pods) == 2, [p.metadata.name for p in pods]
    deleted = core.delete_namespaced_pod(pods[0].metadata.name, "staging")
    assert isinstance(deleted, client.V1Pod), type(deleted)
    print("pods: listed, deleted (the pod)")

    # Deleting the Deployment answers a Status; a missing one is a 404 the client raises.
    status = apps.delete_namespaced_deployment("py-web", "staging")
    status = status if isinstance(status, dict) else status.to_dict()
    assert status.get("kind") == "Status" and status["details"]["kind"] == "deployments", status
    try:
        apps.delete_namespaced_deployment("py-web", "staging")
        raise AssertionError("deleted twice")
    except ApiException as e:
        assert e.status == 404 and "not found" in e.body, e.body
    print("deployment: deleted (Status), 404 after")
    print("all checks passed")


if __name__ == "__main__":
    main()
