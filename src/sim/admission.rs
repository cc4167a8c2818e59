//! What the API server does to an object before storing it: defaulting (the fields the real
//! server fills in, so `kubectl get -o yaml` and template hashes look as usual) and
//! validation (`422 Invalid`, and the PVC-resize admission check answering `403 Forbidden`).

use serde_json::{json, Value};

use super::crd;
use super::errors::ApiError;
use super::resources::ResourceDef;
use super::selectors::LabelSelector;
use super::store::{int_at, set_at, str_at, State};

/// Default `terminationGracePeriodSeconds` of a pod, as in the real API.
const DEFAULT_GRACE_SECONDS: i64 = 30;
/// Deployment defaults (apps/v1).
const DEFAULT_REVISION_HISTORY: i64 = 10;
const DEFAULT_PROGRESS_DEADLINE_SECONDS: i64 = 600;

fn ensure(v: &mut Value, ptr: &str, default: Value) {
    if v.pointer(ptr).is_none_or(Value::is_null) {
        set_at(v, ptr, default);
    }
}

/// Applies server-side defaults in place. Idempotent, so it runs on every write.
pub fn default(def: &ResourceDef, obj: &mut Value, st: &State) {
    if !obj.is_object() {
        return;
    }
    if def.custom {
        crd::default_custom(def, obj, st);
    }
    match def.kind {
        "CustomResourceDefinition" => crd::default_crd(obj),
        "Namespace" => {
            let name = str_at(obj, "/metadata/name").to_string();
            set_at(
                obj,
                "/metadata/labels/kubernetes.io~1metadata.name",
                json!(name),
            );
            ensure(obj, "/spec/finalizers", json!(["kubernetes"]));
            ensure(obj, "/status/phase", json!("Active"));
        }
        "Pod" => {
            if let Some(spec) = obj.get_mut("spec") {
                default_pod_spec(spec);
                ensure(spec, "/serviceAccountName", json!("default"));
            }
            ensure(obj, "/status/phase", json!("Pending"));
            ensure(obj, "/status/qosClass", json!("BestEffort"));
        }
        "Deployment" => {
            ensure(obj, "/spec/replicas", json!(1));
            ensure(
                obj,
                "/spec/strategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}),
            );
            if str_at(obj, "/spec/strategy/type") == "RollingUpdate" {
                ensure(obj, "/spec/strategy/rollingUpdate/maxSurge", json!("25%"));
                ensure(
                    obj,
                    "/spec/strategy/rollingUpdate/maxUnavailable",
                    json!("25%"),
                );
            }
            ensure(
                obj,
                "/spec/revisionHistoryLimit",
                json!(DEFAULT_REVISION_HISTORY),
            );
            ensure(
                obj,
                "/spec/progressDeadlineSeconds",
                json!(DEFAULT_PROGRESS_DEADLINE_SECONDS),
            );
            default_template(obj);
        }
        "ReplicaSet" => {
            ensure(obj, "/spec/replicas", json!(1));
            default_template(obj);
        }
        "StatefulSet" => {
            ensure(obj, "/spec/replicas", json!(1));
            ensure(obj, "/spec/podManagementPolicy", json!("OrderedReady"));
            ensure(
                obj,
                "/spec/updateStrategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}),
            );
            ensure(
                obj,
                "/spec/revisionHistoryLimit",
                json!(DEFAULT_REVISION_HISTORY),
            );
            ensure(
                obj,
                "/spec/persistentVolumeClaimRetentionPolicy",
                json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
            );
            default_template(obj);
        }
        "DaemonSet" => {
            ensure(
                obj,
                "/spec/updateStrategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}),
            );
            ensure(
                obj,
                "/spec/revisionHistoryLimit",
                json!(DEFAULT_REVISION_HISTORY),
            );
            default_template(obj);
        }
        "Job" => {
            // Like the real API: a selector on the Job's own uid, stamped on the template.
            let uid = str_at(obj, "/metadata/uid").to_string();
            let name = str_at(obj, "/metadata/name").to_string();
            if obj.pointer("/spec/selector").is_none() && !uid.is_empty() {
                set_at(
                    obj,
                    "/spec/selector",
                    json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}),
                );
                for (k, v) in [
                    ("batch.kubernetes.io~1controller-uid", &uid),
                    ("controller-uid", &uid),
                    ("batch.kubernetes.io~1job-name", &name),
                    ("job-name", &name),
                ] {
                    set_at(
                        obj,
                        &format!("/spec/template/metadata/labels/{k}"),
                        json!(v),
                    );
                }
            }
            ensure(obj, "/spec/completions", json!(1));
            ensure(obj, "/spec/parallelism", json!(1));
            ensure(obj, "/spec/backoffLimit", json!(6));
            default_template(obj);
        }
        "Service" => {
            ensure(obj, "/spec/type", json!("ClusterIP"));
            ensure(obj, "/spec/sessionAffinity", json!("None"));
            if obj.pointer("/spec/clusterIP").is_none() {
                let ip = format!(
                    "10.96.{}.{}",
                    rand::random::<u8>(),
                    rand::random::<u8>().max(1)
                );
                set_at(obj, "/spec/clusterIP", json!(ip));
                set_at(obj, "/spec/clusterIPs", json!([ip]));
            }
            if let Some(ports) = obj.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
                for p in ports {
                    ensure(p, "/protocol", json!("TCP"));
                    if p.get("targetPort").is_none() {
                        let port = p.get("port").cloned().unwrap_or(json!(80));
                        set_at(p, "/targetPort", port);
                    }
                }
            }
        }
        "Secret" => {
            ensure(obj, "/type", json!("Opaque"));
            if let Some(sd) = obj.as_object_mut().and_then(|m| m.remove("stringData")) {
                if let Some(m) = sd.as_object() {
                    for (k, v) in m {
                        use base64::Engine;
                        let enc = base64::engine::general_purpose::STANDARD
                            .encode(v.as_str().unwrap_or("").as_bytes());
                        set_at(obj, &format!("/data/{}", k.replace('/', "~1")), json!(enc));
                    }
                }
            }
        }
        "PersistentVolumeClaim" => {
            ensure(obj, "/spec/volumeMode", json!("Filesystem"));
            ensure(obj, "/spec/accessModes", json!(["ReadWriteOnce"]));
            if obj.pointer("/spec/storageClassName").is_none() {
                let default_sc = st.list("storageclasses", None).into_iter().find(|sc| {
                    str_at(
                        sc,
                        "/metadata/annotations/storageclass.kubernetes.io~1is-default-class",
                    ) == "true"
                });
                if let Some(sc) = default_sc {
                    set_at(
                        obj,
                        "/spec/storageClassName",
                        json!(str_at(&sc, "/metadata/name")),
                    );
                }
            }
            ensure(obj, "/status/phase", json!("Pending"));
        }
        "StorageClass" => {
            ensure(obj, "/reclaimPolicy", json!("Delete"));
            ensure(obj, "/volumeBindingMode", json!("Immediate"));
        }
        "Node" => {
            ensure(obj, "/spec/podCIDR", json!("10.244.0.0/24"));
        }
        _ => {}
    }
}

fn default_template(obj: &mut Value) {
    if let Some(spec) = obj.pointer_mut("/spec/template/spec") {
        default_pod_spec(spec);
    }
    if let Some(meta) = obj.pointer_mut("/spec/template/metadata") {
        if meta.get("creationTimestamp").is_none() && meta.is_object() {
            // As the real API prints templates.
            set_at(meta, "/creationTimestamp", Value::Null);
        }
    }
}

/// Pod spec defaults, also applied to templates so a pod's spec equals its template's.
pub fn default_pod_spec(spec: &mut Value) {
    if !spec.is_object() {
        return;
    }
    ensure(spec, "/restartPolicy", json!("Always"));
    ensure(
        spec,
        "/terminationGracePeriodSeconds",
        json!(DEFAULT_GRACE_SECONDS),
    );
    ensure(spec, "/dnsPolicy", json!("ClusterFirst"));
    ensure(spec, "/schedulerName", json!("default-scheduler"));
    ensure(spec, "/securityContext", json!({}));
    for list in ["containers", "initContainers"] {
        if let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) {
            for c in cs {
                if !c.is_object() {
                    continue;
                }
                let image = str_at(c, "/image").to_string();
                let tag_latest = !image.rsplit('/').next().unwrap_or("").contains(':')
                    || image.ends_with(":latest");
                ensure(
                    c,
                    "/imagePullPolicy",
                    json!(if tag_latest { "Always" } else { "IfNotPresent" }),
                );
                ensure(c, "/terminationMessagePath", json!("/dev/termination-log"));
                ensure(c, "/terminationMessagePolicy", json!("File"));
                ensure(c, "/resources", json!({}));
                if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
                    for p in ports {
                        ensure(p, "/protocol", json!("TCP"));
                    }
                }
            }
        }
    }
}

/// DNS-1123 subdomain: lowercase alphanumerics, `-` and `.`, alphanumeric at both ends.
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// DNS-1123 label: like a subdomain without dots, at most 63 characters.
pub fn is_dns_label(s: &str) -> bool {
    s.len() <= 63 && !s.contains('.') && is_dns_subdomain(s)
}

/// Bytes in a Kubernetes quantity such as `1Gi`, `500Mi`, `2G`, `1.5Ti`.
pub fn parse_quantity(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult = match suffix {
        "" => 1.0,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "m" => 1e-3,
        _ => return None,
    };
    Some(n * mult)
}

type Causes = Vec<(String, String)>;

fn check_pod_spec(spec: Option<&Value>, at: &str, causes: &mut Causes) {
    let containers = spec
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_array);
    match containers {
        None => causes.push((format!("{at}.containers"), "Required value".into())),
        Some(cs) if cs.is_empty() => {
            causes.push((format!("{at}.containers"), "Required value".into()))
        }
        Some(cs) => {
            for (i, c) in cs.iter().enumerate() {
                let name = str_at(c, "/name");
                if name.is_empty() {
                    causes.push((
                        format!("{at}.containers[{i}].name"),
                        "Required value".into(),
                    ));
                } else if !is_dns_label(name) {
                    causes.push((
                        format!("{at}.containers[{i}].name"),
                        format!("Invalid value: \"{name}\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character"),
                    ));
                }
                if str_at(c, "/image").trim().is_empty() {
                    causes.push((
                        format!("{at}.containers[{i}].image"),
                        "Required value".into(),
                    ));
                }
                check_requests_within_limits(c, &format!("{at}.containers[{i}]"), causes);
            }
        }
    }
}

/// A container may not request more than its limit (the API server's message).
fn check_requests_within_limits(c: &Value, at: &str, causes: &mut Causes) {
    for resource in ["cpu", "memory", "ephemeral-storage"] {
        let request = str_at(c, &format!("/resources/requests/{resource}")).to_string();
        let limit = str_at(c, &format!("/resources/limits/{resource}")).to_string();
        let (Some(r), Some(l)) = (parse_quantity(&request), parse_quantity(&limit)) else {
            continue;
        };
        if r > l {
            causes.push((
                format!("{at}.resources.requests"),
                format!("Invalid value: \"{request}\": must be less than or equal to {resource} limit of {limit}"),
            ));
        }
    }
}

fn check_workload(obj: &Value, old: Option<&Value>, kind: &str, causes: &mut Causes) {
    if kind != "DaemonSet" && kind != "Job" {
        let r = obj.pointer("/spec/replicas");
        match r.and_then(Value::as_i64) {
            Some(n) if n < 0 => causes.push((
                "spec.replicas".into(),
                format!("Invalid value: {n}: must be greater than or equal to 0"),
            )),
            None if r.is_some_and(|v| !v.is_null()) => causes.push((
                "spec.replicas".into(),
                "Invalid value: must be an integer".into(),
            )),
            _ => {}
        }
    }
    let sel_json = obj.pointer("/spec/selector");
    let sel = LabelSelector::from_json(sel_json);
    if kind != "Job" {
        if sel_json.is_none() || sel.is_empty() || sel.reqs.is_empty() {
            causes.push(("spec.selector".into(), "Required value".into()));
        } else {
            let labels = obj
                .pointer("/spec/template/metadata/labels")
                .and_then(Value::as_object);
            if !sel.matches(labels) {
                causes.push((
                    "spec.template.metadata.labels".into(),
                    format!(
                        "Invalid value: {}: `selector` does not match template `labels`",
                        serde_json::to_string(&labels).unwrap_or_default()
                    ),
                ));
            }
        }
        if let Some(old) = old {
            if old.pointer("/spec/selector") != sel_json {
                causes.push((
                    "spec.selector".into(),
                    format!(
                        "Invalid value: {}: field is immutable",
                        sel_json.map(Value::to_string).unwrap_or_default()
                    ),
                ));
            }
        }
    }
    check_pod_spec(
        obj.pointer("/spec/template/spec"),
        "spec.template.spec",
        causes,
    );
    if kind == "Job" && str_at(obj, "/spec/template/spec/restartPolicy") == "Always" {
        causes.push((
            "spec.template.spec.restartPolicy".into(),
            "Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\"".into(),
        ));
    }
    if kind == "Deployment" {
        for f in ["maxSurge", "maxUnavailable"] {
            if let Some(v) = obj.pointer(&format!("/spec/strategy/rollingUpdate/{f}")) {
                let ok = v.as_i64().is_some_and(|n| n >= 0)
                    || v.as_str()
                        .and_then(|s| s.strip_suffix('%'))
                        .is_some_and(|p| p.parse::<u32>().is_ok());
                if !ok {
                    causes.push((
                        format!("spec.strategy.rollingUpdate.{f}"),
                        format!("Invalid value: {v}: must be an integer or percentage (e.g '5%')"),
                    ));
                }
            }
        }
        if int_at(obj, "/spec/progressDeadlineSeconds", 600)
            <= int_at(obj, "/spec/minReadySeconds", 0)
        {
            causes.push((
                "spec.progressDeadlineSeconds".into(),
                "Invalid value: must be greater than minReadySeconds".into(),
            ));
        }
    }
}

/// Validates an object about to be stored (`old` is the stored version on updates).
///
/// # Errors
/// `422 Invalid` listing every failed field, or `403 Forbidden` for a PVC resize the
/// StorageClass does not allow.
pub fn validate(
    def: &ResourceDef,
    obj: &Value,
    old: Option<&Value>,
    st: &State,
) -> Result<(), ApiError> {
    let name = str_at(obj, "/metadata/name");
    let mut causes: Causes = Vec::new();
    if name.is_empty() {
        causes.push((
            "metadata.name".into(),
            "Required value: name or generateName is required".into(),
        ));
    } else {
        let ok = if def.kind == "Namespace" {
            is_dns_label(name)
        } else if def.kind == "Event" {
            !name.contains('/')
        } else {
            is_dns_subdomain(name)
        };
        if !ok {
            causes.push((
                "metadata.name".into(),
                format!("Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"),
            ));
        }
    }
    if obj
        .get("spec")
        .is_some_and(|s| !s.is_object() && !s.is_null())
    {
        causes.push(("spec".into(), "Invalid value: must be an object".into()));
    }
    if causes.is_empty() {
        match def.kind {
            "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" | "Job" => {
                check_workload(obj, old, def.kind, &mut causes)
            }
            "Pod" => check_pod_spec(obj.get("spec"), "spec", &mut causes),
            "PodDisruptionBudget"
                if obj.pointer("/spec/minAvailable").is_some()
                    && obj.pointer("/spec/maxUnavailable").is_some() =>
            {
                causes.push((
                    "spec".into(),
                    "Invalid value: minAvailable and maxUnavailable cannot be both set".into(),
                ));
            }
            "HorizontalPodAutoscaler" => {
                let max = int_at(obj, "/spec/maxReplicas", 0);
                let min = int_at(obj, "/spec/minReplicas", 1);
                if max < 1 || min > max {
                    causes.push((
                        "spec.maxReplicas".into(),
                        format!(
                            "Invalid value: {max}: must be greater than or equal to `minReplicas`"
                        ),
                    ));
                }
            }
            "PersistentVolumeClaim" => return check_pvc(def, obj, old, st),
            "CustomResourceDefinition" => causes.extend(crd::validate_crd(obj, old, st)),
            _ if def.custom => causes.extend(crd::validate_custom(def, obj, st)),
            _ => {}
        }
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(def, name, &causes))
    }
}

fn check_pvc(
    def: &ResourceDef,
    obj: &Value,
    old: Option<&Value>,
    st: &State,
) -> Result<(), ApiError> {
    let name = str_at(obj, "/metadata/name");
    let size_s = str_at(obj, "/spec/resources/requests/storage");
    let Some(size) = parse_quantity(size_s) else {
        return Err(ApiError::invalid(
            def,
            name,
            &[("spec.resources[storage]".into(), "Required value".into())],
        ));
    };
    let Some(old) = old else { return Ok(()) };
    let old_s = str_at(old, "/spec/resources/requests/storage");
    let old_size = parse_quantity(old_s).unwrap_or(0.0);
    if size < old_size {
        return Err(ApiError::invalid(
            def,
            name,
            &[(
                "spec.resources.requests.storage".into(),
                "Forbidden: field can not be less than status.capacity".into(),
            )],
        ));
    }
    if size > old_size {
        let sc = str_at(obj, "/spec/storageClassName");
        let expandable = st
            .get("storageclasses", "", sc)
            .is_some_and(|c| c.get("allowVolumeExpansion").and_then(Value::as_bool) == Some(true));
        if !expandable {
            return Err(ApiError::forbidden(
                def,
                name,
                "only dynamically provisioned pvc can be resized and the storageclass that provisions the pvc must support resize",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::resources::by_plural;

    #[test]
    fn names_follow_dns_1123() {
        assert!(is_dns_subdomain("web-1.example"));
        assert!(!is_dns_subdomain("Web"));
        assert!(!is_dns_subdomain("-web"));
        assert!(!is_dns_label("a.b"));
    }

    #[test]
    fn quantities_parse_binary_and_decimal_suffixes() {
        assert_eq!(parse_quantity("1Gi"), Some(1073741824.0));
        assert_eq!(parse_quantity("500M"), Some(5e8));
        assert_eq!(parse_quantity("1.5Ki"), Some(1536.0));
        assert_eq!(parse_quantity("x"), None);
    }

    #[test]
    fn a_deployment_whose_selector_misses_its_labels_is_invalid() {
        let st = State::new(1.0);
        let d = by_plural("deployments").unwrap();
        let mut obj = json!({"metadata": {"name": "web"}, "spec": {
            "replicas": 1, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "other"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        default(d, &mut obj, &st);
        let err = validate(d, &obj, None, &st).unwrap_err();
        assert_eq!(err.code, 422);
        assert!(
            err.message.contains("does not match template"),
            "{}",
            err.message
        );
        obj["spec"]["template"]["metadata"]["labels"]["app"] = json!("web");
        obj["spec"]["replicas"] = json!(-1);
        let err = validate(d, &obj, None, &st).unwrap_err();
        assert!(err.message.contains("spec.replicas"), "{}", err.message);
    }

    #[test]
    fn a_container_may_not_request_more_than_its_limit() {
        let st = State::new(1.0);
        let pods = by_plural("pods").unwrap();
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i",
            "resources": {"requests": {"cpu": "2", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}}}]}});
        let err = validate(pods, &pod, None, &st).unwrap_err();
        assert_eq!(err.code, 422);
        assert!(
            err.message.contains("spec.containers[0].resources.requests: Invalid value: \"2\": must be less than or equal to cpu limit of 1"),
            "{}",
            err.message
        );
        pod["spec"]["containers"][0]["resources"]["requests"]["cpu"] = json!("500m");
        assert!(validate(pods, &pod, None, &st).is_ok());
    }
}
