//! Following a rollout the way `kubectl rollout status` does: the same conditions, evaluated on
//! every change of the object seen through a watch.

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use kube::{
    runtime::{watcher, WatchStreamExt},
    Api,
};
use serde::de::DeserializeOwned;

use super::retry::is_permanent_code;

/// Where a rollout stands, by kubectl's rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutStatus {
    /// kubectl's message, e.g. `Waiting for deployment "web" rollout to finish: 1 out of 3 new replicas have been updated...`.
    pub message: String,
    pub done: bool,
    /// Set when the rollout cannot finish (ProgressDeadlineExceeded).
    pub failed: bool,
    pub desired: u64,
    pub updated: u64,
    pub ready: u64,
    pub available: u64,
}

/// Why following a rollout stopped before it completed.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    /// The controller gave up (kubectl: `deployment "web" exceeded its progress deadline`).
    #[error("{0}")]
    Failed(String),
    /// The object (`deployment production/web`) disappeared while we were following it.
    #[error("{0} was deleted during the rollout")]
    Deleted(String),
    /// The API server refuses to show us the object (403): the permission was withdrawn, and
    /// no wait brings it back.
    #[error("lost permission to follow {object}: {cause}")]
    Forbidden { object: String, cause: String },
    /// The API server no longer knows the object or its kind (404).
    #[error("{object} is gone: {cause}")]
    Gone { object: String, cause: String },
    /// The watch could not be established.
    #[error("watching the rollout: {0}")]
    Watch(String),
}

impl RolloutError {
    /// Whether the object can no longer be followed at all (deleted, gone, forbidden): the
    /// rollout did not fail, it became unobservable, and restoring a pre-state cannot help —
    /// there is nothing to restore, or we may not look at it.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            RolloutError::Deleted(_) | RolloutError::Forbidden { .. } | RolloutError::Gone { .. }
        )
    }

    /// The error to end with when the watch met `err`, if no retry can heal it (403, 404).
    fn from_watch(err: &watcher::Error, object: &str) -> Option<RolloutError> {
        let status = match err {
            watcher::Error::InitialListFailed(kube::Error::Api(s))
            | watcher::Error::WatchStartFailed(kube::Error::Api(s))
            | watcher::Error::WatchFailed(kube::Error::Api(s))
            | watcher::Error::WatchError(s) => s,
            _ => return None,
        };
        if !is_permanent_code(status.code) {
            return None;
        }
        let object = object.to_string();
        let cause = format!("{} ({}): {}", status.reason, status.code, status.message);
        Some(if status.code == 403 {
            RolloutError::Forbidden { object, cause }
        } else {
            RolloutError::Gone { object, cause }
        })
    }
}

fn count(n: Option<i32>) -> u64 {
    n.unwrap_or(0).max(0) as u64
}

/// kubectl's `DeploymentStatusViewer`: the rollout status of a deployment as last observed.
pub fn deployment_rollout_status(d: &Deployment) -> RolloutStatus {
    let name = d.metadata.name.clone().unwrap_or_default();
    let spec_replicas = d.spec.as_ref().and_then(|s| s.replicas);
    let status = d.status.clone().unwrap_or_default();
    let desired = count(spec_replicas.or(Some(1)));
    let updated = count(status.updated_replicas);
    let replicas = count(status.replicas);
    let ready = count(status.ready_replicas);
    let available = count(status.available_replicas);
    let mut out = RolloutStatus {
        message: String::new(),
        done: false,
        failed: false,
        desired,
        updated,
        ready,
        available,
    };
    let generation = d.metadata.generation.unwrap_or(0);
    if generation > status.observed_generation.unwrap_or(0) {
        out.message = "Waiting for deployment spec update to be observed...".into();
        return out;
    }
    let deadline_exceeded = status.conditions.iter().flatten().any(|c| {
        c.type_ == "Progressing" && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    });
    if deadline_exceeded {
        out.failed = true;
        out.message = format!("deployment {name:?} exceeded its progress deadline");
    } else if spec_replicas.is_some() && updated < desired {
        out.message = format!(
            "Waiting for deployment {name:?} rollout to finish: {updated} out of {desired} new replicas have been updated..."
        );
    } else if replicas > updated {
        out.message = format!(
            "Waiting for deployment {name:?} rollout to finish: {} old replicas are pending termination...",
            replicas - updated
        );
    } else if available < updated {
        out.message = format!(
            "Waiting for deployment {name:?} rollout to finish: {available} of {updated} updated replicas are available..."
        );
    } else {
        out.done = true;
        out.message = format!("deployment {name:?} successfully rolled out");
    }
    out
}

/// kubectl's `StatefulSetStatusViewer`.
pub fn statefulset_rollout_status(sts: &StatefulSet) -> RolloutStatus {
    let name = sts.metadata.name.clone().unwrap_or_default();
    let spec = sts.spec.clone().unwrap_or_default();
    let status = sts.status.clone().unwrap_or_default();
    let desired = count(spec.replicas.or(Some(1)));
    let ready = count(status.ready_replicas);
    let updated = count(status.updated_replicas);
    let mut out = RolloutStatus {
        message: String::new(),
        done: false,
        failed: false,
        desired,
        updated,
        ready,
        available: count(status.available_replicas),
    };
    let strategy = spec.update_strategy.clone().unwrap_or_default();
    if strategy.type_.as_deref().unwrap_or("RollingUpdate") != "RollingUpdate" {
        out.done = true;
        out.message = format!(
            "statefulset {name:?} uses the OnDelete strategy: pods are updated only when deleted"
        );
        return out;
    }
    let observed = status.observed_generation.unwrap_or(0);
    if observed == 0 || sts.metadata.generation.unwrap_or(0) > observed {
        out.message = "Waiting for statefulset spec update to be observed...".into();
        return out;
    }
    if ready < desired {
        out.message = format!("Waiting for {} pods to be ready...", desired - ready);
        return out;
    }
    let partition = strategy
        .rolling_update
        .and_then(|r| r.partition)
        .unwrap_or(0)
        .max(0) as u64;
    if partition > 0 {
        let want = desired.saturating_sub(partition);
        if updated < want {
            out.message = format!(
                "Waiting for partitioned roll out to finish: {updated} out of {want} new pods have been updated..."
            );
        } else {
            out.done = true;
            out.message =
                format!("partitioned roll out complete: {updated} new pods have been updated...");
        }
        return out;
    }
    let update_revision = status.update_revision.unwrap_or_default();
    if update_revision != status.current_revision.unwrap_or_default() {
        out.message = format!(
            "waiting for statefulset rolling update to complete {updated} pods at revision {update_revision}..."
        );
        return out;
    }
    out.done = true;
    out.message = format!(
        "statefulset rolling update complete {ready} pods at revision {update_revision}..."
    );
    out
}

/// kubectl's `DaemonSetStatusViewer`.
pub fn daemonset_rollout_status(ds: &DaemonSet) -> RolloutStatus {
    let name = ds.metadata.name.clone().unwrap_or_default();
    let status = ds.status.clone().unwrap_or_default();
    let desired = count(Some(status.desired_number_scheduled));
    let updated = count(status.updated_number_scheduled);
    let available = count(status.number_available);
    let mut out = RolloutStatus {
        message: String::new(),
        done: false,
        failed: false,
        desired,
        updated,
        ready: count(Some(status.number_ready)),
        available,
    };
    let strategy = ds
        .spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.type_.clone())
        .unwrap_or_else(|| "RollingUpdate".into());
    if strategy != "RollingUpdate" {
        out.done = true;
        out.message = format!(
            "daemon set {name:?} uses the OnDelete strategy: pods are updated only when deleted"
        );
        return out;
    }
    if ds.metadata.generation.unwrap_or(0) > status.observed_generation.unwrap_or(0) {
        out.message = "Waiting for daemon set spec update to be observed...".into();
    } else if updated < desired {
        out.message = format!(
            "Waiting for daemon set {name:?} rollout to finish: {updated} out of {desired} new pods have been updated..."
        );
    } else if available < desired {
        out.message = format!(
            "Waiting for daemon set {name:?} rollout to finish: {available} of {desired} updated pods are available..."
        );
    } else {
        out.done = true;
        out.message = format!("daemon set {name:?} successfully rolled out");
    }
    out
}

/// Watches deployment `name` until its rollout completes (kubectl `rollout status`).
///
/// # Errors
/// See [`follow_rollout`].
pub async fn follow_deployment_rollout(
    api: &Api<Deployment>,
    name: &str,
    on_change: impl FnMut(&RolloutStatus) + Send,
) -> Result<RolloutStatus, RolloutError> {
    follow_rollout(api, name, deployment_rollout_status, on_change).await
}

/// Watches object `name` until `status_of` says its rollout is done, calling `on_change`
/// whenever the status message or counts change. Runs until done or failed: put it under a
/// timeout. Transient watch errors (5xx, 429, a dropped connection, 410 Expired) are retried
/// with backoff; 403 and 404 end it at once, since waiting cannot heal them.
///
/// # Errors
/// [`RolloutError::Failed`] when the controller gave up (ProgressDeadlineExceeded),
/// [`RolloutError::Deleted`] when the object goes away (a DELETED event, or a (re)list
/// without it), [`RolloutError::Forbidden`] on a 403, [`RolloutError::Gone`] on a 404,
/// [`RolloutError::Watch`] when the watch ends.
pub async fn follow_rollout<K>(
    api: &Api<K>,
    name: &str,
    status_of: impl Fn(&K) -> RolloutStatus + Send,
    mut on_change: impl FnMut(&RolloutStatus) + Send,
) -> Result<RolloutStatus, RolloutError>
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
    K::DynamicType: Default,
{
    let object = describe(api, name);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = watcher(api.clone(), config).default_backoff().boxed();
    let mut last: Option<RolloutStatus> = None;
    // Whether the current (re)list showed the object: a list without it means it is gone,
    // and no DELETED event will ever come for it.
    let mut listed = false;
    while let Some(event) = events.next().await {
        let found = match event {
            Ok(watcher::Event::Apply(o)) | Ok(watcher::Event::InitApply(o)) => o,
            Ok(watcher::Event::Delete(_)) => return Err(RolloutError::Deleted(object)),
            Ok(watcher::Event::Init) => {
                listed = false;
                continue;
            }
            Ok(watcher::Event::InitDone) if !listed => return Err(RolloutError::Deleted(object)),
            Ok(watcher::Event::InitDone) => continue,
            Err(e) => {
                if let Some(permanent) = RolloutError::from_watch(&e, &object) {
                    return Err(permanent);
                }
                // default_backoff() retries the rest.
                tracing::debug!(error = %e, "rollout watch error, retrying");
                continue;
            }
        };
        listed = true;
        let status = status_of(&found);
        if last.as_ref() != Some(&status) {
            on_change(&status);
        }
        if status.failed {
            return Err(RolloutError::Failed(status.message));
        }
        if status.done {
            return Ok(status);
        }
        last = Some(status);
    }
    Err(RolloutError::Watch(format!("watch on {object} ended")))
}

/// `deployment production/web`: the object as failure messages name it.
fn describe<K>(api: &Api<K>, name: &str) -> String
where
    K: kube::Resource,
    K::DynamicType: Default,
{
    let kind = K::kind(&K::DynamicType::default()).to_lowercase();
    match api.namespace() {
        Some(namespace) => format!("{kind} {namespace}/{name}"),
        None => format!("{kind} {name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mk_deployment(generation: i64, status: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "generation": generation},
            "spec": {"replicas": 3, "selector": {}, "template": {}},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn an_unobserved_generation_is_waited_for() {
        let d = mk_deployment(2, json!({"observedGeneration": 1}));
        let s = deployment_rollout_status(&d);
        assert!(!s.done && s.message.contains("spec update to be observed"));
    }

    #[test]
    fn the_conditions_follow_kubectl_in_order() {
        let d = mk_deployment(
            2,
            json!({"observedGeneration": 2, "replicas": 4, "updatedReplicas": 1}),
        );
        assert!(deployment_rollout_status(&d)
            .message
            .contains("1 out of 3 new replicas have been updated"));
        let d = mk_deployment(
            2,
            json!({"observedGeneration": 2, "replicas": 4, "updatedReplicas": 3}),
        );
        assert!(deployment_rollout_status(&d)
            .message
            .contains("1 old replicas are pending termination"));
        let d = mk_deployment(
            2,
            json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 2}),
        );
        assert!(deployment_rollout_status(&d)
            .message
            .contains("2 of 3 updated replicas are available"));
        let d = mk_deployment(
            2,
            json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3}),
        );
        let s = deployment_rollout_status(&d);
        assert!(s.done && s.message == "deployment \"web\" successfully rolled out");
    }

    #[test]
    fn a_progress_deadline_fails_the_rollout() {
        let d = mk_deployment(
            1,
            json!({"observedGeneration": 1, "conditions": [
                {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
            ]}),
        );
        let s = deployment_rollout_status(&d);
        assert!(s.failed && !s.done);
        assert_eq!(
            s.message,
            "deployment \"web\" exceeded its progress deadline"
        );
    }
}
