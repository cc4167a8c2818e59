//! Server-side printing (`Accept: application/json;as=Table;g=meta.k8s.io;v=v1`): the
//! columns `kubectl get` shows for the common kinds; `NAME AGE` for the rest.

use std::sync::Arc;

use serde_json::{json, Value};

use super::resources::ResourceDef;
use super::store::{at, int_at, str_at};

/// Like the apimachinery `HumanDuration`: `45s`, `3m12s`, `15m`, `5h3m`, `3d`.
pub fn human_age(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        s if s < 120 => format!("{s}s"),
        s if s < 600 => {
            if s % 60 == 0 {
                format!("{}m", s / 60)
            } else {
                format!("{}m{}s", s / 60, s % 60)
            }
        }
        s if s < 3 * 3600 => format!("{}m", s / 60),
        s if s < 8 * 3600 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s if s < 8 * 86400 => format!("{}d{}h", s / 86400, (s % 86400) / 3600),
        s => format!("{}d", s / 86400),
    }
}

fn age_of(ts: &str) -> String {
    match chrono::DateTime::parse_from_rfc3339(ts) {
        Ok(t) => human_age((chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds()),
        Err(_) => "<unknown>".into(),
    }
}

fn col(name: &str, ty: &str, priority: i64) -> Value {
    let format = if name == "Name" { "name" } else { "" };
    json!({"name": name, "type": ty, "format": format, "description": "", "priority": priority})
}

/// Pod status as kubectl shows it: Terminating, a waiting reason, or the phase.
pub fn pod_status(p: &Value) -> String {
    if at(p, "/metadata/deletionTimestamp").is_some() {
        return "Terminating".into();
    }
    if let Some(cs) = p
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
    {
        for c in cs {
            let r = str_at(c, "/state/waiting/reason");
            if !r.is_empty() {
                return r.into();
            }
        }
    }
    let phase = str_at(p, "/status/phase");
    if phase == "Pending" && !str_at(p, "/spec/nodeName").is_empty() {
        return "ContainerCreating".into();
    }
    phase.into()
}

fn columns_and_cells(def: &ResourceDef, o: &Value) -> (Vec<Value>, Vec<Value>) {
    let name = json!(str_at(o, "/metadata/name"));
    let age = json!(age_of(str_at(o, "/metadata/creationTimestamp")));
    let i = |p: &str| int_at(o, p, 0);
    match def.kind {
        "Pod" => {
            let cs = o
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let total = o
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            let ready = cs
                .iter()
                .filter(|c| c.get("ready") == Some(&json!(true)))
                .count();
            let restarts: i64 = cs.iter().map(|c| int_at(c, "/restartCount", 0)).sum();
            let ip = str_at(o, "/status/podIP");
            let node = str_at(o, "/spec/nodeName");
            (
                vec![
                    col("Name", "string", 0),
                    col("Ready", "string", 0),
                    col("Status", "string", 0),
                    col("Restarts", "string", 0),
                    col("Age", "string", 0),
                    col("IP", "string", 1),
                    col("Node", "string", 1),
                ],
                vec![
                    name,
                    json!(format!("{ready}/{total}")),
                    json!(pod_status(o)),
                    json!(restarts.to_string()),
                    age,
                    json!(if ip.is_empty() { "<none>" } else { ip }),
                    json!(if node.is_empty() { "<none>" } else { node }),
                ],
            )
        }
        "Deployment" => (
            vec![
                col("Name", "string", 0),
                col("Ready", "string", 0),
                col("Up-to-date", "integer", 0),
                col("Available", "integer", 0),
                col("Age", "string", 0),
            ],
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    i("/status/readyReplicas"),
                    i("/spec/replicas")
                )),
                json!(i("/status/updatedReplicas")),
                json!(i("/status/availableReplicas")),
                age,
            ],
        ),
        "ReplicaSet" => (
            vec![
                col("Name", "string", 0),
                col("Desired", "integer", 0),
                col("Current", "integer", 0),
                col("Ready", "integer", 0),
                col("Age", "string", 0),
            ],
            vec![
                name,
                json!(i("/spec/replicas")),
                json!(i("/status/replicas")),
                json!(i("/status/readyReplicas")),
                age,
            ],
        ),
        "StatefulSet" => (
            vec![
                col("Name", "string", 0),
                col("Ready", "string", 0),
                col("Age", "string", 0),
            ],
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    i("/status/readyReplicas"),
                    i("/spec/replicas")
                )),
                age,
            ],
        ),
        "DaemonSet" => (
            vec![
                col("Name", "string", 0),
                col("Desired", "integer", 0),
                col("Current", "integer", 0),
                col("Ready", "integer", 0),
                col("Up-to-date", "integer", 0),
                col("Available", "integer", 0),
                col("Age", "string", 0),
            ],
            vec![
                name,
                json!(i("/status/desiredNumberScheduled")),
                json!(i("/status/currentNumberScheduled")),
                json!(i("/status/numberReady")),
                json!(i("/status/updatedNumberScheduled")),
                json!(i("/status/numberAvailable")),
                age,
            ],
        ),
        "Node" => {
            let ready = o
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .and_then(|cs| cs.iter().find(|c| str_at(c, "/type") == "Ready"))
                .map(|c| str_at(c, "/status") == "True")
                .unwrap_or(false);
            let mut status = if ready {
                "Ready".to_string()
            } else {
                "NotReady".to_string()
            };
            if at(o, "/spec/unschedulable") == Some(&json!(true)) {
                status.push_str(",SchedulingDisabled");
            }
            let roles = o
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .map(|l| {
                    l.keys()
                        .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "<none>".into());
            (
                vec![
                    col("Name", "string", 0),
                    col("Status", "string", 0),
                    col("Roles", "string", 0),
                    col("Age", "string", 0),
                    col("Version", "string", 0),
                ],
                vec![
                    name,
                    json!(status),
                    json!(roles),
                    age,
                    json!(str_at(o, "/status/nodeInfo/kubeletVersion")),
                ],
            )
        }
        "PersistentVolumeClaim" => (
            vec![
                col("Name", "string", 0),
                col("Status", "string", 0),
                col("Volume", "string", 0),
                col("Capacity", "string", 0),
                col("Access Modes", "string", 0),
                col("StorageClass", "string", 0),
                col("Age", "string", 0),
            ],
            vec![
                name,
                json!(str_at(o, "/status/phase")),
                json!(str_at(o, "/spec/volumeName")),
                json!(str_at(o, "/status/capacity/storage")),
                json!("RWO"),
                json!(str_at(o, "/spec/storageClassName")),
                age,
            ],
        ),
        "PodDisruptionBudget" => {
            let show = |p: &str| match at(o, p) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                _ => "N/A".into(),
            };
            (
                vec![
                    col("Name", "string", 0),
                    col("Min Available", "string", 0),
                    col("Max Unavailable", "string", 0),
                    col("Allowed Disruptions", "integer", 0),
                    col("Age", "string", 0),
                ],
                vec![
                    name,
                    json!(show("/spec/minAvailable")),
                    json!(show("/spec/maxUnavailable")),
                    json!(i("/status/disruptionsAllowed")),
                    age,
                ],
            )
        }
        "Event" => {
            let obj = format!(
                "{}/{}",
                str_at(o, "/involvedObject/kind").to_lowercase(),
                str_at(o, "/involvedObject/name")
            );
            let last = str_at(o, "/lastTimestamp");
            (
                vec![
                    col("Last Seen", "string", 0),
                    col("Type", "string", 0),
                    col("Reason", "string", 0),
                    col("Object", "string", 0),
                    col("Message", "string", 0),
                ],
                vec![
                    json!(age_of(if last.is_empty() {
                        str_at(o, "/metadata/creationTimestamp")
                    } else {
                        last
                    })),
                    json!(str_at(o, "/type")),
                    json!(str_at(o, "/reason")),
                    json!(obj),
                    json!(str_at(o, "/message")),
                ],
            )
        }
        "Namespace" => (
            vec![
                col("Name", "string", 0),
                col("Status", "string", 0),
                col("Age", "string", 0),
            ],
            vec![name, json!(str_at(o, "/status/phase")), age],
        ),
        "Service" => {
            let ports: Vec<String> = at(o, "/spec/ports")
                .and_then(Value::as_array)
                .map(|ps| {
                    ps.iter()
                        .map(|p| format!("{}/{}", int_at(p, "/port", 0), str_at(p, "/protocol")))
                        .collect()
                })
                .unwrap_or_default();
            (
                vec![
                    col("Name", "string", 0),
                    col("Type", "string", 0),
                    col("Cluster-IP", "string", 0),
                    col("External-IP", "string", 0),
                    col("Port(s)", "string", 0),
                    col("Age", "string", 0),
                ],
                vec![
                    name,
                    json!(str_at(o, "/spec/type")),
                    json!(str_at(o, "/spec/clusterIP")),
                    json!("<none>"),
                    json!(ports.join(",")),
                    age,
                ],
            )
        }
        "ConfigMap" => (
            vec![
                col("Name", "string", 0),
                col("Data", "integer", 0),
                col("Age", "string", 0),
            ],
            vec![
                name,
                json!(o
                    .get("data")
                    .and_then(Value::as_object)
                    .map_or(0, |m| m.len())),
                age,
            ],
        ),
        "Secret" => (
            vec![
                col("Name", "string", 0),
                col("Type", "string", 0),
                col("Data", "integer", 0),
                col("Age", "string", 0),
            ],
            vec![
                name,
                json!(str_at(o, "/type")),
                json!(o
                    .get("data")
                    .and_then(Value::as_object)
                    .map_or(0, |m| m.len())),
                age,
            ],
        ),
        "HorizontalPodAutoscaler" => (
            vec![
                col("Name", "string", 0),
                col("Reference", "string", 0),
                col("Targets", "string", 0),
                col("MinPods", "string", 0),
                col("MaxPods", "string", 0),
                col("Replicas", "string", 0),
                col("Age", "string", 0),
            ],
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    str_at(o, "/spec/scaleTargetRef/kind"),
                    str_at(o, "/spec/scaleTargetRef/name")
                )),
                json!("cpu: <unknown>/70%"),
                json!(int_at(o, "/spec/minReplicas", 1).to_string()),
                json!(int_at(o, "/spec/maxReplicas", 0).to_string()),
                json!(int_at(o, "/status/currentReplicas", 0).to_string()),
                age,
            ],
        ),
        // The CRD's printer columns.
        "VolumeSnapshot" => (
            vec![
                col("Name", "string", 0),
                col("ReadyToUse", "boolean", 0),
                col("SourcePVC", "string", 0),
                col("SourceSnapshotContent", "string", 0),
                col("RestoreSize", "string", 0),
                col("SnapshotClass", "string", 0),
                col("SnapshotContent", "string", 0),
                col("CreationTime", "date", 0),
                col("Age", "date", 0),
            ],
            vec![
                name,
                at(o, "/status/readyToUse").cloned().unwrap_or(Value::Null),
                json!(str_at(o, "/spec/source/persistentVolumeClaimName")),
                json!(str_at(o, "/spec/source/volumeSnapshotContentName")),
                json!(str_at(o, "/status/restoreSize")),
                json!(str_at(o, "/spec/volumeSnapshotClassName")),
                json!(str_at(o, "/status/boundVolumeSnapshotContentName")),
                json!(str_at(o, "/status/creationTime")),
                age,
            ],
        ),
        "Role" | "ClusterRole" | "CustomResourceDefinition" => (
            vec![col("Name", "string", 0), col("Created At", "date", 0)],
            vec![name, json!(str_at(o, "/metadata/creationTimestamp"))],
        ),
        "RoleBinding" | "ClusterRoleBinding" => {
            let subjects = |kind: &str| -> Value {
                let names: Vec<String> = o
                    .get("subjects")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter(|s| str_at(s, "/kind") == kind)
                    .map(|s| match (kind, str_at(s, "/namespace")) {
                        ("ServiceAccount", ns) => format!("{ns}/{}", str_at(s, "/name")),
                        _ => str_at(s, "/name").to_string(),
                    })
                    .collect();
                json!(names.join(", "))
            };
            let role = format!(
                "{}/{}",
                str_at(o, "/roleRef/kind"),
                str_at(o, "/roleRef/name")
            );
            (
                vec![
                    col("Name", "string", 0),
                    col("Role", "string", 0),
                    col("Age", "string", 0),
                    col("Users", "string", 1),
                    col("Groups", "string", 1),
                    col("ServiceAccounts", "string", 1),
                ],
                vec![
                    name,
                    json!(role),
                    age,
                    subjects("User"),
                    subjects("Group"),
                    subjects("ServiceAccount"),
                ],
            )
        }
        _ => (
            vec![col("Name", "string", 0), col("Age", "string", 0)],
            vec![name, age],
        ),
    }
}

/// A `meta.k8s.io/v1 Table` of `items` (rows carry `PartialObjectMetadata`).
pub fn table(def: &ResourceDef, items: &[Arc<Value>], rv: u64) -> Value {
    let mut columns = None;
    let mut rows = Vec::with_capacity(items.len());
    for o in items {
        let (c, cells) = columns_and_cells(def, o);
        columns.get_or_insert(c);
        rows.push(json!({
            "cells": cells,
            "object": {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": o.get("metadata").cloned().unwrap_or(json!({})),
            }
        }));
    }
    let columns = columns.unwrap_or_else(|| columns_and_cells(def, &json!({})).0);
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": rv.to_string()},
        "columnDefinitions": columns,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_like_kubectl() {
        assert_eq!(human_age(5), "5s");
        assert_eq!(human_age(190), "3m10s");
        assert_eq!(human_age(900), "15m");
        assert_eq!(human_age(5 * 3600 + 120), "5h2m");
        assert_eq!(human_age(30 * 86400), "30d");
    }
}
