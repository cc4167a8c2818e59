"""The official Python `kubernetes` client with a CustomResourceDefinition on the simulated
cluster: the CRD is created and established, and CustomObjectsApi creates, reads, patches
(spec and the status subresource) and deletes objects of it.

Usage: kube_crd.py KUBECONFIG. Prints one line per check; exits non-zero on the first failure.
"""
import sys
import time

from kubernetes import client, config
from kubernetes.client.rest import ApiException

GROUP, VERSION, PLURAL = "example.com", "v1", "gizmos"


def main() -> None:
    config.load_kube_config(config_file=sys.argv[1])
    ext = client.ApiextensionsV1Api()
    custom = client.CustomObjectsApi()

    crd = {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP, "scope": "Namespaced",
            "names": {"plural": PLURAL, "singular": "gizmo", "kind": "Gizmo"},
            "versions": [{
                "name": VERSION, "served": True, "storage": True,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {"size": {"type": "integer"}}},
                    "status": {"type": "object", "properties": {"phase": {"type": "string"}}},
                }}},
            }],
        },
    }
    ext.create_custom_resource_definition(crd)
    deadline = time.time() + 10
    while True:
        got = ext.read_custom_resource_definition(f"{PLURAL}.{GROUP}")
        conds = {c.type: c.status for c in (got.status.conditions or [])}
        if conds.get("Established") == "True":
            break
        assert time.time() < deadline, conds
        time.sleep(0.1)
    print("crd: created and established")

    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Gizmo",
            "metadata": {"name": "g1"}, "spec": {"size": 1, "unknown": "pruned"}}
    created = custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, body)
    assert created["spec"] == {"size": 1}, created["spec"]
    assert created["metadata"]["generation"] == 1, created["metadata"]
    got = custom.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "g1")
    assert got["metadata"]["uid"] == created["metadata"]["uid"], got
    print("custom object: created (unknown field pruned), read")

    patched = custom.patch_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, "g1", {"spec": {"size": 3}})
    assert patched["spec"]["size"] == 3 and patched["metadata"]["generation"] == 2, patched
    status = custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, "default", PLURAL, "g1", {"status": {"phase": "Ready"}})
    assert status["status"] == {"phase": "Ready"}, status
    assert status["metadata"]["generation"] == 2, status["metadata"]
    listed = custom.list_namespaced_custom_object(GROUP, VERSION, "default", PLURAL)
    assert [i["metadata"]["name"] for i in listed["items"]] == ["g1"], listed
    print("custom object: spec patched (generation 2), status patched, listed")

    try:
        custom.create_namespaced_custom_object(
            GROUP, VERSION, "default", PLURAL,
            {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Gizmo",
             "metadata": {"name": "bad"}, "spec": {"size": "big"}})
        raise AssertionError("a wrong type was accepted")
    except ApiException as e:
        assert e.status == 422 and "spec.size in body must be of type integer" in e.body, e.body
    print("custom object: wrong type refused (422)")

    custom.delete_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "g1")
    try:
        custom.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "g1")
        raise AssertionError("still there")
    except ApiException as e:
        assert e.status == 404, e.status
    print("custom object: deleted, 404 after")
    print("all checks passed")


if __name__ == "__main__":
    main()
