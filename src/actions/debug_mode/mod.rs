//! Debug mode for a while: `enable_debug_mode` raises a workload's log level through an
//! environment variable (`LOG_LEVEL=debug` by default) and records on the workload when it
//! ends and what to put back (annotations, and the label [`DEBUG_LABEL`] that finds it);
//! `disable_debug_mode` puts it back. The end is kept in the cluster, on the object, so it
//! survives a restart of the executor: the engine's expiry loop (`engine::expiry`) submits
//! `disable_debug_mode` for every workload whose time is up.
//!
//! This file is what both share: the annotations, and the patches that set and restore the
//! variable in the pod template.

pub(super) mod disable;
pub(super) mod enable;

use chrono::{DateTime, Utc};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use kube::{
    api::{ApiResource, DynamicObject, ListParams},
    Api, ResourceExt,
};
use serde_json::{json, Map, Value};

use super::{ActionError, Target};

/// A workload whose debug mode has ended, and the `request_id` of its one revert.
pub struct EndedDebugMode {
    pub target: Target,
    pub request_id: String,
}

/// Every workload on `client`'s cluster whose debug mode has ended (their label and end, as
/// `enable_debug_mode` wrote them).
///
/// # Errors
/// When a list fails.
pub async fn ended_debug_modes(client: &kube::Client) -> Result<Vec<EndedDebugMode>, kube::Error> {
    let resources = [
        ("Deployment", ApiResource::erase::<Deployment>(&())),
        ("StatefulSet", ApiResource::erase::<StatefulSet>(&())),
        ("DaemonSet", ApiResource::erase::<DaemonSet>(&())),
    ];
    let selector = ListParams::default().labels(&format!("{DEBUG_LABEL}=on"));
    let mut out = Vec::new();
    for (kind, resource) in resources {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
        for object in api.list(&selector).await?.items {
            let Some(until) = object
                .annotations()
                .get(DEBUG_UNTIL)
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            else {
                continue;
            };
            if until.with_timezone(&Utc) > Utc::now() {
                continue;
            }
            out.push(EndedDebugMode {
                request_id: format!(
                    "debug-mode-end-{}-{}",
                    object.uid().unwrap_or_default(),
                    until.timestamp()
                ),
                target: Target {
                    cluster: String::new(),
                    namespace: object.namespace().unwrap_or_default(),
                    kind: kind.into(),
                    name: object.name_any(),
                },
            });
        }
    }
    Ok(out)
}

/// On a workload in debug mode; what the expiry loop selects.
pub const DEBUG_LABEL: &str = "executor-service.io/debug-mode";
/// When debug mode ends (RFC 3339).
pub const DEBUG_UNTIL: &str = "executor-service.io/debug-until";
/// What to restore: `{"env": NAME, "previous": {container: value or null}}`.
pub const DEBUG_RESTORE: &str = "executor-service.io/debug-restore";

/// `(container, value)` of one variable in each container; `None`: not set.
pub(super) type EnvValues = Vec<(String, Option<String>)>;

/// The containers of a pod template spec, by name, with the variable's value in each.
pub(super) fn env_values(template_spec: &Value, env: &str) -> EnvValues {
    template_spec["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let value = c["env"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|e| e["name"] == env)
                .map(|e| e["value"].as_str().unwrap_or_default().to_string());
            (c["name"].as_str().unwrap_or_default().to_string(), value)
        })
        .collect()
}

/// The strategic merge patch giving `env` the value in `values` in each container named
/// (`None` removes it).
pub(super) fn env_patch(env: &str, values: &[(String, Option<String>)]) -> Value {
    let containers: Vec<Value> = values
        .iter()
        .map(|(container, value)| {
            let entry = match value {
                Some(v) => json!({ "name": env, "value": v }),
                None => json!({ "name": env, "$patch": "delete" }),
            };
            json!({ "name": container, "env": [entry] })
        })
        .collect();
    json!({ "spec": { "template": { "spec": { "containers": containers } } } })
}

/// The recorded restore data of a workload's annotations, if it is in debug mode.
pub(super) fn restore_data(annotations: &Map<String, Value>) -> Result<Option<Value>, ActionError> {
    let Some(text) = annotations.get(DEBUG_RESTORE).and_then(Value::as_str) else {
        return Ok(None);
    };
    serde_json::from_str(text).map(Some).map_err(|e| {
        ActionError::Precondition(format!(
            "annotation {DEBUG_RESTORE} is not what enable_debug_mode wrote: {e}"
        ))
    })
}

/// `(container, previous value)` pairs of restore data.
pub(super) fn previous_values(restore: &Value) -> EnvValues {
    restore["previous"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(c, v)| (c.clone(), v.as_str().map(str::to_string)))
        .collect()
}
