//! The objects `deploy_code` applies, as JSON for server-side apply: the code's ConfigMap, the
//! Deployment that runs it (hardened: non-root, read-only root filesystem, no privilege
//! escalation, no capabilities, no service-account token, CPU and memory limits), its Service,
//! the NetworkPolicy that isolates it and the optional HPA.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::{Runtime, API_ID_LABEL, CONTAINER, MOUNT_PATH, RUNTIME_LABEL, TEMPLATE_DIGEST};
use crate::actions::parse_quantity;

/// The user the code runs as (the distroless `nonroot` uid).
const RUN_AS: i64 = 65532;
/// Requests of the code container, lowered to its limits when those are smaller.
const CPU_REQUEST: &str = "100m";
const MEMORY_REQUEST: &str = "128Mi";
/// The one writable place: `/tmp`, for caches (Go's build cache, Python's bytecode).
const TMP_SIZE: &str = "256Mi";
/// The label every namespace carries with its name (Kubernetes 1.21+).
const NAMESPACE_NAME: &str = "kubernetes.io/metadata.name";

/// What to run, from the action's parameters.
pub(crate) struct CodeSpec {
    pub api_id: String,
    /// `api-<id>`: the Deployment, Service, NetworkPolicy and HPA.
    pub name: String,
    pub namespace: String,
    pub runtime: &'static Runtime,
    pub image: String,
    pub command: Vec<String>,
    pub port: i64,
    pub cpu: String,
    pub memory: String,
    pub replicas: i64,
    /// Above `replicas`: an HPA scales between the two on CPU.
    pub max_replicas: i64,
    pub ingress_from_namespace: String,
    pub ingress_from_labels: Map<String, Value>,
}

/// Where the code comes from: files uploaded with the request (kept in a ConfigMap named by
/// their digest, immutable), or a ConfigMap the caller made.
pub(crate) enum Source {
    Files(BTreeMap<String, String>),
    ConfigMap(String),
}

/// The ConfigMap key of a bundle path (keys hold no `/`): `pkg/util.py` → `pkg__util.py`.
pub(crate) fn key_of(path: &str) -> String {
    path.replace('/', "__")
}

/// The digest of a bundle: over every path and content, in path order.
pub(crate) fn bundle_digest(files: &BTreeMap<String, String>) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    for (path, content) in files {
        hash.update(path.as_bytes());
        hash.update([0]);
        hash.update(content.as_bytes());
        hash.update([0]);
    }
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// `api-<id>-code-<digest>`: one immutable ConfigMap per version of the code.
pub(crate) fn bundle_name(name: &str, digest: &str) -> String {
    format!("{name}-code-{}", &digest[..10])
}

impl CodeSpec {
    fn labels(&self) -> Value {
        json!({
            "app.kubernetes.io/name": self.name,
            "app.kubernetes.io/component": "user-code",
            "app.kubernetes.io/managed-by": crate::actions::FIELD_MANAGER,
            API_ID_LABEL: self.api_id,
            RUNTIME_LABEL: self.runtime.name,
        })
    }

    fn metadata(&self, name: &str) -> Value {
        json!({ "name": name, "namespace": self.namespace, "labels": self.labels() })
    }

    /// The bundle's ConfigMap, immutable: a new version of the code is a new ConfigMap.
    pub fn config_map(&self, name: &str, files: &BTreeMap<String, String>) -> Value {
        let data: Map<String, Value> = files
            .iter()
            .map(|(path, content)| (key_of(path), Value::String(content.clone())))
            .collect();
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": self.metadata(name),
            "immutable": true,
            "data": data,
        })
    }

    /// The Deployment running the code from ConfigMap `code` (with `files`, each key mapped
    /// back to its path); its template carries its own digest so its pods are recognisable.
    pub fn deployment(&self, code: &str, files: Option<&BTreeMap<String, String>>) -> Value {
        let mut env = vec![
            json!({ "name": "PORT", "value": self.port.to_string() }),
            json!({ "name": "HOME", "value": "/tmp" }),
            json!({ "name": "API_ID", "value": self.api_id }),
        ];
        match self.runtime.name {
            "python" => {
                env.push(json!({ "name": "PYTHONDONTWRITEBYTECODE", "value": "1" }));
                env.push(json!({ "name": "PYTHONUNBUFFERED", "value": "1" }));
            }
            "go" => {
                env.push(json!({ "name": "GOCACHE", "value": "/tmp/go-cache" }));
                env.push(json!({ "name": "GOPATH", "value": "/tmp/go" }));
            }
            _ => {}
        }
        let mut code_volume = json!({ "name": code, "defaultMode": 0o444 });
        if let Some(files) = files {
            code_volume["items"] = files
                .keys()
                .map(|path| json!({ "key": key_of(path), "path": path }))
                .collect();
        }
        let request =
            |wanted: &str, limit: &str| match (parse_quantity(wanted), parse_quantity(limit)) {
                (Some(w), Some(l)) if l < w => limit.to_string(),
                _ => wanted.to_string(),
            };
        let mut template = json!({
            "metadata": { "labels": self.labels() },
            "spec": {
                "automountServiceAccountToken": false,
                "enableServiceLinks": false,
                "restartPolicy": "Always",
                "securityContext": {
                    "runAsNonRoot": true,
                    "runAsUser": RUN_AS,
                    "runAsGroup": RUN_AS,
                    "fsGroup": RUN_AS,
                    "seccompProfile": { "type": "RuntimeDefault" },
                },
                "containers": [{
                    "name": CONTAINER,
                    "image": self.image,
                    "command": self.command,
                    "workingDir": MOUNT_PATH,
                    "env": env,
                    "ports": [{ "name": "http", "containerPort": self.port, "protocol": "TCP" }],
                    "resources": {
                        "requests": {
                            "cpu": request(CPU_REQUEST, &self.cpu),
                            "memory": request(MEMORY_REQUEST, &self.memory),
                        },
                        "limits": { "cpu": self.cpu, "memory": self.memory },
                    },
                    "securityContext": {
                        "allowPrivilegeEscalation": false,
                        "readOnlyRootFilesystem": true,
                        "runAsNonRoot": true,
                        "capabilities": { "drop": ["ALL"] },
                    },
                    "readinessProbe": {
                        "tcpSocket": { "port": "http" },
                        "initialDelaySeconds": 2,
                        "periodSeconds": 5,
                    },
                    "livenessProbe": {
                        "tcpSocket": { "port": "http" },
                        "initialDelaySeconds": 15,
                        "periodSeconds": 10,
                    },
                    "volumeMounts": [
                        { "name": "code", "mountPath": MOUNT_PATH, "readOnly": true },
                        { "name": "tmp", "mountPath": "/tmp" },
                    ],
                }],
                "volumes": [
                    { "name": "code", "configMap": code_volume },
                    { "name": "tmp", "emptyDir": { "sizeLimit": TMP_SIZE } },
                ],
            },
        });
        let digest = {
            use sha2::{Digest, Sha256};
            let text = serde_json::to_string(&template).unwrap_or_default();
            let d = Sha256::digest(text.as_bytes());
            d.iter()
                .take(8)
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        };
        template["metadata"]["annotations"] = json!({ TEMPLATE_DIGEST: digest });
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": self.metadata(&self.name),
            "spec": {
                "replicas": self.replicas,
                "revisionHistoryLimit": 5,
                "selector": { "matchLabels": { API_ID_LABEL: self.api_id } },
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": { "maxUnavailable": 0, "maxSurge": 1 },
                },
                "template": template,
            },
        })
    }

    /// Port 80 of `api-<id>` to the code's port.
    pub fn service(&self) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": self.metadata(&self.name),
            "spec": {
                "type": "ClusterIP",
                "selector": { API_ID_LABEL: self.api_id },
                "ports": [{ "name": "http", "port": 80, "targetPort": "http", "protocol": "TCP" }],
            },
        })
    }

    /// Ingress to the code's pods only from the gateway (its namespace, and its pods' labels
    /// when given), only on the code's port: no other pod, other APIs' included, reaches it.
    pub fn network_policy(&self) -> Value {
        let mut peer = json!({
            "namespaceSelector": { "matchLabels": { NAMESPACE_NAME: self.ingress_from_namespace } },
        });
        if !self.ingress_from_labels.is_empty() {
            peer["podSelector"] = json!({ "matchLabels": self.ingress_from_labels });
        }
        json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": self.metadata(&self.name),
            "spec": {
                "podSelector": { "matchLabels": { API_ID_LABEL: self.api_id } },
                "policyTypes": ["Ingress"],
                "ingress": [{
                    "from": [peer],
                    "ports": [{ "port": self.port, "protocol": "TCP" }],
                }],
            },
        })
    }

    /// Between `replicas` and `max_replicas` on 80 % CPU.
    pub fn autoscaler(&self) -> Value {
        json!({
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": self.metadata(&self.name),
            "spec": {
                "scaleTargetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": self.name },
                "minReplicas": self.replicas,
                "maxReplicas": self.max_replicas,
                "metrics": [{
                    "type": "Resource",
                    "resource": { "name": "cpu", "target": { "type": "Utilization", "averageUtilization": 80 } },
                }],
            },
        })
    }
}

/// `object` owned by the Deployment (`uid`): deleting the Deployment deletes it.
pub(crate) fn owned_by(mut object: Value, name: &str, uid: &str) -> Value {
    object["metadata"]["ownerReferences"] = json!([{
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": name,
        "uid": uid,
        "controller": false,
        "blockOwnerDeletion": true,
    }]);
    object
}
