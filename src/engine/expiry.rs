//! Changes that end on their own: a workload put in debug mode (`enable_debug_mode`) carries
//! its end on the object itself ([`DEBUG_UNTIL`]), so the end survives any restart of the
//! executor. Every [`EXPIRY_CHECK`] the engine lists the workloads labelled [`DEBUG_LABEL`] on
//! the default cluster and submits `disable_debug_mode` for each whose time is up: an ordinary
//! execution (history, events, policy), one per end whatever the number of replicas that see
//! it, since its `request_id` is derived from the object and its end.

use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use kube::{
    api::{ApiResource, DynamicObject, ListParams},
    Api, ResourceExt,
};

use super::{Engine, EngineError};
use crate::actions::{DEBUG_LABEL, DEBUG_UNTIL};
use crate::domain::{ExecutionRequest, RequestedTarget};

/// How often ended debug modes are looked for: the revert comes at most this late.
pub const EXPIRY_CHECK: Duration = Duration::from_secs(5);
/// Who the reverts are recorded as requested by.
const REQUESTER: &str = "executor-service/debug-mode-expiry";

impl Engine {
    /// Submits `disable_debug_mode` for every workload whose debug mode has ended; returns how
    /// many were submitted (or found already submitted).
    ///
    /// # Errors
    /// When the default cluster cannot be listed.
    pub async fn end_expired_debug_modes(&self) -> Result<usize, EngineError> {
        if self.is_closing() {
            return Ok(0);
        }
        let client = self
            .clusters()
            .client("")
            .map_err(|e| EngineError::Unavailable(e.to_string()))?;
        let resources = [
            ("Deployment", ApiResource::erase::<Deployment>(&())),
            ("StatefulSet", ApiResource::erase::<StatefulSet>(&())),
            ("DaemonSet", ApiResource::erase::<DaemonSet>(&())),
        ];
        let selector = ListParams::default().labels(&format!("{DEBUG_LABEL}=on"));
        let mut submitted = 0;
        for (kind, resource) in resources {
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
            let listed = api.list(&selector).await.map_err(|e| {
                EngineError::Unavailable(format!("listing {kind}s in debug mode: {e}"))
            })?;
            for object in listed.items {
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
                let request = ExecutionRequest {
                    action: "disable_debug_mode".into(),
                    target: RequestedTarget {
                        cluster: String::new(),
                        namespace: object.namespace().unwrap_or_default(),
                        kind: kind.into(),
                        name: object.name_any(),
                    },
                    request_id: format!(
                        "debug-mode-end-{}-{}",
                        object.uid().unwrap_or_default(),
                        until.timestamp()
                    ),
                    requester: REQUESTER.into(),
                    ..Default::default()
                };
                match self.submit(request).await {
                    Ok(x) => {
                        submitted += 1;
                        tracing::info!(execution_id = %x.id, workload = %object.name_any(), "debug mode ended: revert submitted");
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, workload = %object.name_any(), "debug mode ended but its revert was refused")
                    }
                }
            }
        }
        Ok(submitted)
    }
}
