//! Scenarios (objects created at start, in order) and the small `mk_*` builders tests use.
//! Builders follow the `app=<name>` label convention.

use serde_json::{json, Value};

/// Objects the cluster is seeded with, created in order through the normal API paths
/// (so they are defaulted and validated like client writes).
#[derive(Debug, Clone, Default)]
pub struct Scenario {
    objects: Vec<Value>,
}

impl Scenario {
    /// Nothing but the `default` namespace (the cluster always has it) and one node.
    pub fn empty() -> Self {
        Scenario::default()
            .with(mk_namespace("default"))
            .with(mk_node("node-1"))
    }

    /// Adds an object (builder style).
    #[must_use]
    pub fn with(mut self, obj: Value) -> Self {
        self.objects.push(obj);
        self
    }

    /// The objects, in creation order.
    pub fn objects(&self) -> &[Value] {
        &self.objects
    }

    /// A scenario by name: `demo` or `empty`.
    pub fn by_name(name: &str) -> Option<Self> {
        match name {
            "demo" => Some(Self::demo()),
            "empty" => Some(Self::empty()),
            _ => None,
        }
    }

    /// A small production-like cluster:
    /// - nodes `node-1`..`node-3`;
    /// - namespaces `default`, `kube-system`, `production`, `staging`, and `apis` with
    ///   `api-gateway` for the API platform's deployed code;
    /// - StorageClasses `standard` (default, not expandable) and `standard-expandable`, and
    ///   the default VolumeSnapshotClass `csi-snapclass`;
    /// - production: Deployments `web` (3 × nginx:1.25, PDB `web-pdb` maxUnavailable 1),
    ///   `api` (2, HPA 2–6), `worker` (2); StatefulSet `db` (2, PVCs of 10Gi on
    ///   `standard-expandable`); Services `web`, `api`; ConfigMaps, a Secret, a ServiceAccount;
    /// - staging: Deployment `web` (2);
    /// - kube-system: DaemonSet `node-exporter`.
    pub fn demo() -> Self {
        let mut s = Scenario::default();
        for ns in [
            "default",
            "kube-system",
            "production",
            "staging",
            "apis",
            "api-gateway",
        ] {
            s = s.with(mk_namespace(ns));
        }
        for n in ["node-1", "node-2", "node-3"] {
            s = s.with(mk_node(n));
        }
        s = s.with(json!({
            "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
            "metadata": {"name": "csi-snapclass",
                         "annotations": {"snapshot.storage.kubernetes.io/is-default-class": "true"}},
            "driver": "hostpath.csi.k8s.io", "deletionPolicy": "Delete",
        }));
        let mut standard = mk_storage_class("standard", false);
        standard["metadata"]["annotations"] =
            json!({"storageclass.kubernetes.io/is-default-class": "true"});
        s.with(standard)
            .with(mk_storage_class("standard-expandable", true))
            .with(mk_configmap(
                "production",
                "web-config",
                json!({"nginx.conf": "worker_processes 2;\n"}),
            ))
            .with(mk_configmap(
                "production",
                "api-config",
                json!({"LOG_LEVEL": "info", "DB_HOST": "db-0.db"}),
            ))
            .with(mk_secret(
                "production",
                "api-credentials",
                json!({"username": "api", "password": "s3cr3t"}),
            ))
            .with(mk_service_account("production", "api"))
            .with(mk_deployment("production", "web", 3, "nginx:1.25"))
            .with(mk_pdb(
                "production",
                "web-pdb",
                "web",
                PdbLimit::MaxUnavailable(1),
            ))
            .with(mk_service("production", "web", 80))
            .with(mk_deployment("production", "api", 2, "example/api:2.4.1"))
            .with(mk_service("production", "api", 8080))
            .with(mk_hpa("production", "api", "api", 2, 6))
            .with(mk_deployment(
                "production",
                "worker",
                2,
                "example/worker:1.8.0",
            ))
            .with(mk_service("production", "db", 5432))
            .with(mk_statefulset(
                "production",
                "db",
                2,
                "postgres:16",
                "standard-expandable",
                "10Gi",
            ))
            .with(mk_deployment("staging", "web", 2, "nginx:1.25"))
            .with(mk_daemonset(
                "kube-system",
                "node-exporter",
                "prom/node-exporter:v1.8.0",
            ))
    }
}

/// A PDB limit: `minAvailable` or `maxUnavailable`, as a count or a percentage.
#[derive(Debug, Clone, Copy)]
pub enum PdbLimit {
    MinAvailable(i64),
    MaxUnavailable(i64),
    MinAvailablePercent(u32),
    MaxUnavailablePercent(u32),
}

pub fn mk_namespace(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
}

/// A Ready node with 4 CPUs, 16Gi and room for 110 pods.
pub fn mk_node(name: &str) -> Value {
    let now = crate::sim::store::now_str();
    let n: u32 = name
        .trim_start_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .unwrap_or(0);
    let cond = |t: &str, s: &str, r: &str, m: &str| {
        json!({"type": t, "status": s, "reason": r, "message": m,
               "lastHeartbeatTime": now, "lastTransitionTime": now})
    };
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
            "node.kubernetes.io/instance-type": "sim.large", "topology.kubernetes.io/zone": format!("zone-{}", (n % 3) + 1)
        }},
        "spec": {"podCIDR": format!("10.244.{n}.0/24"), "podCIDRs": [format!("10.244.{n}.0/24")]},
        "status": {
            "capacity": {"cpu": "4", "memory": "16Gi", "pods": "110", "ephemeral-storage": "100Gi"},
            "allocatable": {"cpu": "3800m", "memory": "15Gi", "pods": "110", "ephemeral-storage": "95Gi"},
            "conditions": [
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                cond("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
            ],
            "addresses": [{"type": "InternalIP", "address": format!("192.168.49.{}", n + 1)}, {"type": "Hostname", "address": name}],
            "nodeInfo": {
                "kubeletVersion": "v1.37.0", "kubeProxyVersion": "v1.37.0", "containerRuntimeVersion": "containerd://2.1.0",
                "osImage": "Simulated Linux", "kernelVersion": "6.8.0-sim", "operatingSystem": "linux", "architecture": "amd64",
                "machineID": format!("{n:032x}"), "systemUUID": format!("00000000-0000-0000-0000-{n:012x}"), "bootID": format!("boot-{n}")
            }
        }
    })
}

fn pod_template(name: &str, image: &str) -> Value {
    json!({
        "metadata": {"labels": {"app": name}},
        "spec": {"containers": [{"name": name, "image": image}]}
    })
}

pub fn mk_deployment(ns: &str, name: &str, replicas: i64, image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": pod_template(name, image)}
    })
}

pub fn mk_pdb(ns: &str, name: &str, app: &str, limit: PdbLimit) -> Value {
    let (k, v) = match limit {
        PdbLimit::MinAvailable(n) => ("minAvailable", json!(n)),
        PdbLimit::MaxUnavailable(n) => ("maxUnavailable", json!(n)),
        PdbLimit::MinAvailablePercent(p) => ("minAvailable", json!(format!("{p}%"))),
        PdbLimit::MaxUnavailablePercent(p) => ("maxUnavailable", json!(format!("{p}%"))),
    };
    let mut spec = json!({"selector": {"matchLabels": {"app": app}}});
    spec[k] = v;
    json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
           "metadata": {"name": name, "namespace": ns}, "spec": spec})
}

pub fn mk_storage_class(name: &str, allow_expansion: bool) -> Value {
    json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
           "metadata": {"name": name}, "provisioner": "sim.csi.k8s.io",
           "allowVolumeExpansion": allow_expansion})
}

pub fn mk_pvc(ns: &str, name: &str, size: &str, storage_class: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
           "metadata": {"name": name, "namespace": ns},
           "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": storage_class,
                    "resources": {"requests": {"storage": size}}}})
}

/// A StatefulSet with one `data` volume claim template of `size` on `storage_class`.
pub fn mk_statefulset(
    ns: &str,
    name: &str,
    replicas: i64,
    image: &str,
    storage_class: &str,
    size: &str,
) -> Value {
    let mut tmpl = pod_template(name, image);
    tmpl["spec"]["containers"][0]["volumeMounts"] = json!([{"name": "data", "mountPath": "/data"}]);
    json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
        "spec": {"replicas": replicas, "serviceName": name,
                 "selector": {"matchLabels": {"app": name}}, "template": tmpl,
                 "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
                     "accessModes": ["ReadWriteOnce"], "storageClassName": storage_class,
                     "resources": {"requests": {"storage": size}}}}]}
    })
}

pub fn mk_daemonset(ns: &str, name: &str, image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
        "spec": {"selector": {"matchLabels": {"app": name}}, "template": pod_template(name, image)}
    })
}

pub fn mk_hpa(ns: &str, name: &str, deployment: &str, min: i64, max: i64) -> Value {
    json!({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment},
                 "minReplicas": min, "maxReplicas": max,
                 "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                     "target": {"type": "Utilization", "averageUtilization": 70}}}]}
    })
}

/// A bare pod, optionally already bound to `node`.
pub fn mk_pod(ns: &str, name: &str, node: Option<&str>, image: &str) -> Value {
    let mut p = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
        "spec": {"containers": [{"name": name, "image": image}]}
    });
    if let Some(n) = node {
        p["spec"]["nodeName"] = json!(n);
    }
    p
}

pub fn mk_configmap(ns: &str, name: &str, data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns}, "data": data})
}

/// A Secret from plain-text values (stored base64-encoded, as `stringData` is).
pub fn mk_secret(ns: &str, name: &str, string_data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": ns},
           "type": "Opaque", "stringData": string_data})
}

pub fn mk_service_account(ns: &str, name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": ns}})
}

pub fn mk_service(ns: &str, app: &str, port: i64) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": app, "namespace": ns, "labels": {"app": app}},
           "spec": {"selector": {"app": app}, "ports": [{"name": "http", "port": port}]}})
}
