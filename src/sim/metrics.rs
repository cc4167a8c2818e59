//! The resource metrics API (`metrics.k8s.io/v1beta1`, what metrics-server serves and
//! `kubectl top` reads): PodMetrics of every running pod and NodeMetrics of every node, made
//! up from the pods' requests — a container uses about 30 % of its CPU request and 50 % of its
//! memory request, varying by ±10 % every few seconds — unless the pod's annotation
//! [`USAGE_ANNOTATION`] (`cpu=120m,memory=200Mi`) says what each container uses.

use serde_json::{json, Value};

use super::admission::parse_quantity;
use super::errors::ApiError;
use super::selectors::LabelSelector;
use super::store::{at, str_at, State};

pub const GROUP: &str = "metrics.k8s.io";
pub const VERSION: &str = "v1beta1";
/// Set on a pod: what each of its containers uses.
pub const USAGE_ANNOTATION: &str = "sim.executor-service.io/usage";

/// The group as discovery lists it.
pub fn group() -> Value {
    let gv = json!({"groupVersion": format!("{GROUP}/{VERSION}"), "version": VERSION});
    json!({"name": GROUP, "versions": [gv], "preferredVersion": gv})
}

/// `GET /apis/metrics.k8s.io/v1beta1`.
pub fn resource_list() -> Value {
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": format!("{GROUP}/{VERSION}"),
        "resources": [
            {"name": "nodes", "singularName": "", "namespaced": false, "kind": "NodeMetrics", "verbs": ["get", "list"]},
            {"name": "pods", "singularName": "", "namespaced": true, "kind": "PodMetrics", "verbs": ["get", "list"]},
        ],
    })
}

/// ±10 %, changing every 5 s, different per container.
fn wobble(seed: &str) -> f64 {
    use sha2::{Digest, Sha256};
    let tick = chrono::Utc::now().timestamp() / 5;
    let d = Sha256::digest(format!("{seed}/{tick}").as_bytes());
    0.9 + f64::from(d[0]) / 255.0 * 0.2
}

fn cpu(cores: f64) -> String {
    format!("{}n", (cores * 1e9).round() as i64)
}

fn memory(bytes: f64) -> String {
    format!("{}Ki", (bytes / 1024.0).round() as i64)
}

/// `(cpu cores, memory bytes)` each container of `pod` uses now.
fn usage(pod: &Value) -> Vec<(String, f64, f64)> {
    let given = str_at(
        pod,
        &format!(
            "/metadata/annotations/{}",
            USAGE_ANNOTATION.replace('/', "~1")
        ),
    );
    let given = |resource: &str| {
        given
            .split(',')
            .filter_map(|kv| kv.trim().split_once('='))
            .find(|(k, _)| *k == resource)
            .and_then(|(_, v)| parse_quantity(v))
    };
    at(pod, "/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| {
            let name = str_at(c, "/name").to_string();
            let request = |r: &str| parse_quantity(str_at(c, &format!("/resources/requests/{r}")));
            let w = wobble(&format!("{}/{name}", str_at(pod, "/metadata/uid")));
            let cores =
                given("cpu").unwrap_or_else(|| request("cpu").map_or(0.02, |r| r * 0.3) * w);
            let bytes = given("memory")
                .unwrap_or_else(|| request("memory").map_or(48.0 * 1048576.0, |r| r * 0.5) * w);
            (name, cores, bytes)
        })
        .collect()
}

fn running(pod: &Value) -> bool {
    str_at(pod, "/status/phase") == "Running"
        && pod.pointer("/metadata/deletionTimestamp").is_none()
}

fn pod_metrics(pod: &Value) -> Value {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    json!({
        "kind": "PodMetrics",
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "metadata": {
            "name": str_at(pod, "/metadata/name"),
            "namespace": str_at(pod, "/metadata/namespace"),
            "labels": at(pod, "/metadata/labels").cloned().unwrap_or(json!({})),
            "creationTimestamp": now,
        },
        "timestamp": now,
        "window": "15s",
        "containers": usage(pod).into_iter().map(|(name, cores, bytes)| json!({
            "name": name, "usage": {"cpu": cpu(cores), "memory": memory(bytes)},
        })).collect::<Vec<_>>(),
    })
}

/// `GET …/pods` (in `ns`, or all), filtered by `labelSelector`, or one pod's metrics.
///
/// # Errors
/// 404 for a pod that is not running, 400 for a bad selector.
pub fn pods(
    st: &State,
    ns: Option<&str>,
    name: Option<&str>,
    selector: &str,
) -> Result<Value, ApiError> {
    if let (Some(ns), Some(name)) = (ns, name) {
        return st
            .get("pods", ns, name)
            .filter(|p| running(p))
            .map(|p| pod_metrics(p))
            .ok_or_else(|| {
                ApiError::new(
                    404,
                    "NotFound",
                    format!("podmetrics.metrics.k8s.io \"{name}\" not found"),
                )
            });
    }
    let selector = LabelSelector::parse(selector).map_err(ApiError::bad_request)?;
    let items: Vec<Value> = st
        .list("pods", ns)
        .iter()
        .filter(|p| running(p) && selector.matches_obj(p))
        .map(|p| pod_metrics(p))
        .collect();
    Ok(
        json!({"kind": "PodMetricsList", "apiVersion": format!("{GROUP}/{VERSION}"), "metadata": {}, "items": items}),
    )
}

/// `GET …/nodes[/{name}]`: each node's use, the sum of its running pods'.
///
/// # Errors
/// 404 for an unknown node.
pub fn nodes(st: &State, name: Option<&str>) -> Result<Value, ApiError> {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let pods = st.list("pods", None);
    let of = |node: &str| {
        let (mut cores, mut bytes) = (0.05, 256.0 * 1048576.0);
        for p in pods
            .iter()
            .filter(|p| running(p) && str_at(p, "/spec/nodeName") == node)
        {
            for (_, c, b) in usage(p) {
                cores += c;
                bytes += b;
            }
        }
        json!({
            "kind": "NodeMetrics", "apiVersion": format!("{GROUP}/{VERSION}"),
            "metadata": {"name": node, "creationTimestamp": now},
            "timestamp": now, "window": "15s",
            "usage": {"cpu": cpu(cores), "memory": memory(bytes)},
        })
    };
    let names: Vec<String> = st
        .list("nodes", None)
        .iter()
        .map(|n| str_at(n, "/metadata/name").to_string())
        .collect();
    match name {
        Some(n) if names.iter().any(|x| x == n) => Ok(of(n)),
        Some(n) => Err(ApiError::new(
            404,
            "NotFound",
            format!("nodemetrics.metrics.k8s.io \"{n}\" not found"),
        )),
        None => Ok(json!({
            "kind": "NodeMetricsList", "apiVersion": format!("{GROUP}/{VERSION}"), "metadata": {},
            "items": names.iter().map(|n| of(n)).collect::<Vec<_>>(),
        })),
    }
}
