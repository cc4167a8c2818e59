//! One reconcile of a `KubernetesExecution`: accept it into the engine once (keyed by its uid
//! and generation, so every replica's controller converges on one execution), then mirror
//! the execution into the status, apply approvals given by annotation, and cancel on delete.

use std::{collections::HashSet, sync::Arc, sync::Mutex, time::Duration};

use futures::StreamExt;
use kube::{
    api::{Patch, PatchParams},
    runtime::{
        controller::Action,
        finalizer::{finalizer, Event as Finalizer},
        reflector::ObjectRef,
    },
    Api, ResourceExt,
};
use serde_json::json;
use tokio::sync::mpsc;

use super::{
    resource::{
        KubernetesExecution, KubernetesExecutionStatus, APPROVE_ANNOTATION, FINALIZER,
        REASON_ANNOTATION, REJECT_ANNOTATION,
    },
    status::{self, ACCEPTED, DRY_RUN, SPEC_CHANGE_REFUSED},
    ControllerConfig,
};
use crate::{
    domain::{AlertContext, ExecutionRequest, ExecutionState, Recommendation, RequestedTarget},
    engine::{Engine, EngineError},
};

/// How often an execution that is not over is looked at even without a change: the fallback
/// when its event follower is not running (another replica runs it, or too many are followed).
const FALLBACK_REQUEUE: Duration = Duration::from_secs(5);
/// Executions followed at once for prompt status updates; beyond it the fallback serves.
const MAX_FOLLOWERS: usize = 10_000;

/// What every reconcile shares.
pub struct Context {
    pub engine: Engine,
    pub client: kube::Client,
    pub config: ControllerConfig,
    /// Execution ids whose events are being followed.
    pub followed: Arc<Mutex<HashSet<String>>>,
    /// Objects to reconcile again because their execution moved (bounded; a full channel
    /// drops the hint, the fallback requeue still comes).
    pub triggers: mpsc::Sender<ObjectRef<KubernetesExecution>>,
}

/// Why a reconcile failed; it is retried with a delay.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The API server refused or did not answer a status or finalizer write.
    #[error("kubernetes: {0}")]
    Kube(#[from] kube::Error),
    /// The engine could not take the request now (full queue, unavailable store, …).
    #[error("engine: {0}")]
    Engine(#[from] EngineError),
    /// Adding or removing the finalizer failed.
    #[error("finalizer: {0}")]
    Finalizer(String),
}

pub async fn reconcile(
    obj: Arc<KubernetesExecution>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let namespace = obj.namespace().unwrap_or_default();
    let api: Api<KubernetesExecution> = Api::namespaced(ctx.client.clone(), &namespace);
    finalizer(&api, FINALIZER, obj, |event| async {
        match event {
            Finalizer::Apply(obj) => apply(&api, &obj, &ctx).await,
            Finalizer::Cleanup(obj) => cleanup(&api, &obj, &ctx).await,
        }
    })
    .await
    .map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e)
        | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => ReconcileError::Finalizer(other.to_string()),
    })
}

/// Who approves by annotation in `namespace`: whoever may annotate KubernetesExecutions
/// there, as one identity for the authorization rules.
fn approver(ctx: &Context, namespace: &str) -> String {
    ctx.config
        .approver
        .clone()
        .unwrap_or_else(|| format!("kubernetesexecution-approver:{namespace}"))
}

/// The requester recorded for executions of objects in `namespace`.
fn requester(ctx: &Context, namespace: &str) -> String {
    ctx.config
        .identity
        .clone()
        .unwrap_or_else(|| format!("kubernetesexecution:{namespace}"))
}

async fn apply(
    api: &Api<KubernetesExecution>,
    obj: &KubernetesExecution,
    ctx: &Context,
) -> Result<Action, ReconcileError> {
    let old = obj.status.clone().unwrap_or_default();
    let generation = obj.metadata.generation;
    let namespace = obj.namespace().unwrap_or_default();
    let who = requester(ctx, &namespace);
    let (new, action) = match old.execution_id.clone() {
        Some(id) => follow(obj, &id, &who, old.clone(), ctx).await?,
        // Rejected or dry-run for this generation: done until the spec changes.
        None if old.phase.is_some() && old.observed_generation == generation => {
            (old.clone(), Action::await_change())
        }
        None => accept(obj, &who, old.clone(), ctx).await?,
    };
    // A replica whose view is behind never takes a finished object back to running.
    let backwards = status::is_final(old.phase.as_deref())
        && !status::is_final(new.phase.as_deref())
        && old.execution_id == new.execution_id;
    if new != old && !backwards {
        // Fields the new status no longer has are cleared: a merge patch keeps what it omits.
        let mut status = serde_json::to_value(&new).unwrap_or_default();
        if let (Some(now), Ok(serde_json::Value::Object(before))) =
            (status.as_object_mut(), serde_json::to_value(&old))
        {
            for key in before.keys() {
                now.entry(key.clone()).or_insert(serde_json::Value::Null);
            }
        }
        let patch = json!({ "status": status });
        api.patch_status(
            &obj.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    }
    Ok(action)
}

/// The engine's request for `obj`'s spec.
fn request(obj: &KubernetesExecution, who: &str) -> ExecutionRequest {
    let spec = &obj.spec;
    let namespace = obj.namespace().unwrap_or_default();
    let uid = obj.uid().unwrap_or_default();
    let metadata = spec.request.clone().unwrap_or_default();
    ExecutionRequest {
        action: spec.action.clone(),
        target: RequestedTarget {
            cluster: spec.target.cluster.clone(),
            // Cluster-scoped kinds ignore the namespace; the engine clears it for them.
            namespace: if spec.target.namespace.is_empty() {
                namespace
            } else {
                spec.target.namespace.clone()
            },
            kind: spec.target.kind.clone(),
            name: spec.target.name.clone(),
        },
        parameters: spec.parameters.clone(),
        // The object, not its generation: whatever a spec edit racing the first status write
        // does, one object never becomes two executions.
        request_id: format!("kubernetesexecution/{uid}"),
        timeout: spec
            .timeout_seconds
            .map(|s| Duration::from_secs(u64::from(s))),
        alert: metadata.alert.map(|a| AlertContext {
            name: a.name,
            severity: a.severity,
            labels: a.labels,
            annotations: a.annotations,
        }),
        requester: who.to_string(),
        trace_id: String::new(),
        rollback_on_failure: spec.rollback_on_failure,
        priority: 0,
        recommendation: (!metadata.incident.is_empty()
            || !metadata.reasoning.is_empty()
            || !metadata.source.is_empty())
        .then_some(Recommendation {
            incident_id: metadata.incident,
            confidence: None,
            reasoning: metadata.reasoning,
            source: metadata.source,
        }),
    }
}

/// First sight of this generation: hand it to the engine (or plan it, for a dry run).
async fn accept(
    obj: &KubernetesExecution,
    who: &str,
    mut status: KubernetesExecutionStatus,
    ctx: &Context,
) -> Result<(KubernetesExecutionStatus, Action), ReconcileError> {
    let generation = obj.metadata.generation;
    let request = request(obj, who);
    status.requester = Some(who.to_string());
    if obj.spec.dry_run {
        match ctx.engine.dry_run(request).await {
            Ok(report) => {
                let mut plan = report.plan.to_json();
                plan["policy"] = report
                    .policy
                    .as_ref()
                    .map(|d| json!({"verdict": d.verdict(), "reasons": d.reasons}))
                    .unwrap_or(serde_json::Value::Null);
                status.phase = Some("Succeeded".into());
                status.message = Some(report.plan.summary.clone());
                status.result = Some(plan);
                status::set_condition(
                    &mut status,
                    DRY_RUN,
                    true,
                    "Planned",
                    "dry run: nothing was changed",
                    generation,
                );
                status.observed_generation = generation;
                return Ok((status, Action::await_change()));
            }
            Err(e) => return refused(status, e, generation),
        }
    }
    match ctx.engine.submit(request).await {
        Ok(view) => {
            status.accepted_generation = generation;
            // What a dry run of an earlier generation left is not this execution's.
            status.conditions.retain(|c| c.type_ != DRY_RUN);
            status.result = None;
            let events = ctx
                .engine
                .get(&view.id, who)
                .await
                .map(|(_, events)| events)
                .unwrap_or_default();
            let status = status::mirror(status, &view, events.last().map(|e| &**e), generation);
            tracing::info!(execution_id = %view.id, object = %obj.name_any(), "KubernetesExecution accepted");
            let action = watch_until_final(obj, &view.id, who, &status, ctx);
            Ok((status, action))
        }
        Err(e) => refused(status, e, generation),
    }
}

/// A refusal that stands becomes the `Rejected` phase naming why; a passing one is retried.
fn refused(
    mut status: KubernetesExecutionStatus,
    error: EngineError,
    generation: Option<i64>,
) -> Result<(KubernetesExecutionStatus, Action), ReconcileError> {
    let Some((reason, message)) = status::refusal(&error) else {
        return Err(error.into());
    };
    status.phase = Some("Rejected".into());
    status.message = Some(message.clone());
    status::set_condition(&mut status, ACCEPTED, false, reason, message, generation);
    status.observed_generation = generation;
    Ok((status, Action::await_change()))
}

/// An accepted execution: mirror it, pass on an approval, refuse spec changes.
async fn follow(
    obj: &KubernetesExecution,
    id: &str,
    who: &str,
    status: KubernetesExecutionStatus,
    ctx: &Context,
) -> Result<(KubernetesExecutionStatus, Action), ReconcileError> {
    let generation = obj.metadata.generation;
    let mut refused_approval = None;
    let (mut view, mut events) = match ctx.engine.get(id, who).await {
        Ok(found) => found,
        // Pruned from the history (or another store): the status keeps what it last saw.
        Err(EngineError::NotFound(_)) => {
            let mut status = status;
            if !status::is_final(status.phase.as_deref()) {
                status.message = Some(format!("execution {id} is no longer in the history"));
            }
            return Ok((status, Action::await_change()));
        }
        Err(e) => return Err(e.into()),
    };
    if view.state == ExecutionState::WaitingApproval {
        if let Some((approve, by)) = decision(obj) {
            // The annotation's value is a claim anyone allowed to annotate the object can make:
            // it goes into the reason; the approver is that namespace's annotators, whom
            // Kubernetes RBAC (patch on kubernetesexecutions) and the authorization rules name.
            let annotation = if approve {
                APPROVE_ANNOTATION
            } else {
                REJECT_ANNOTATION
            };
            let given = obj
                .annotations()
                .get(REASON_ANNOTATION)
                .map(|r| format!(": {r}"))
                .unwrap_or_default();
            let reason = format!("{annotation}={by}{given}");
            let approver = approver(ctx, &obj.namespace().unwrap_or_default());
            match ctx
                .engine
                .decide_approval(id, approve, &approver, &reason)
                .await
            {
                Ok(_) => (view, events) = ctx.engine.get(id, who).await?,
                Err(e) => {
                    tracing::warn!(execution_id = %id, error = %e, "approval by annotation refused");
                    refused_approval = Some(e.to_string());
                }
            }
        }
    }
    let mut status = status::mirror(status, &view, events.last().map(|e| &**e), generation);
    if let Some(why) = refused_approval {
        let accepted = status.accepted_generation;
        status::set_condition(
            &mut status,
            status::APPROVED,
            false,
            "ApprovalRefused",
            why,
            accepted,
        );
    }
    let accepted = status.accepted_generation;
    if generation.is_some() && generation != accepted {
        status::set_condition(
            &mut status,
            SPEC_CHANGE_REFUSED,
            true,
            "AlreadyAccepted",
            format!(
                "the spec changed (generation {}) after execution {id} was accepted at generation {}; changes are not applied: create a new KubernetesExecution",
                generation.unwrap_or_default(),
                accepted.unwrap_or_default()
            ),
            generation,
        );
    }
    let action = watch_until_final(obj, id, who, &status, ctx);
    Ok((status, action))
}

/// The approval the annotations give, if any: `(approve, who)`.
fn decision(obj: &KubernetesExecution) -> Option<(bool, String)> {
    let given = |key: &str| {
        obj.annotations()
            .get(key)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    given(REJECT_ANNOTATION)
        .map(|by| (false, by))
        .or_else(|| given(APPROVE_ANNOTATION).map(|by| (true, by)))
}

/// Follows the execution's events (once per execution) so the status moves with it; until it
/// ends, also comes back after [`FALLBACK_REQUEUE`].
fn watch_until_final(
    obj: &KubernetesExecution,
    id: &str,
    who: &str,
    status: &KubernetesExecutionStatus,
    ctx: &Context,
) -> Action {
    if status::is_final(status.phase.as_deref()) {
        return Action::await_change();
    }
    let fresh = {
        let mut followed = ctx.followed.lock().unwrap_or_else(|p| p.into_inner());
        followed.len() < MAX_FOLLOWERS && followed.insert(id.to_string())
    };
    if fresh {
        let engine = ctx.engine.clone();
        let triggers = ctx.triggers.clone();
        let object = ObjectRef::from_obj(obj);
        let id = id.to_string();
        let who = who.to_string();
        let from = status.last_progress.as_ref().map_or(0, |p| p.sequence);
        let followed = Arc::clone(&ctx.followed);
        tokio::spawn(async move {
            if let Ok(events) = engine.watch(&id, from, &who).await {
                futures::pin_mut!(events);
                while events.next().await.is_some() {
                    // A full channel already holds a hint for a reconcile to come.
                    let _ = triggers.try_send(object.clone());
                }
            }
            followed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
        });
    }
    Action::requeue(FALLBACK_REQUEUE)
}

/// The object is being deleted: an execution that may still run is cancelled first; its
/// history stays in the store.
async fn cleanup(
    api: &Api<KubernetesExecution>,
    obj: &KubernetesExecution,
    ctx: &Context,
) -> Result<Action, ReconcileError> {
    // The cache may not have the status written a moment ago (created, accepted, deleted at
    // once): without an execution there, read the object itself before letting it go.
    let fresh;
    let obj = if obj
        .status
        .as_ref()
        .is_some_and(|s| s.execution_id.is_some())
    {
        obj
    } else {
        match api.get_opt(&obj.name_any()).await? {
            Some(current) => {
                fresh = current;
                &fresh
            }
            None => obj,
        }
    };
    let Some(id) = obj.status.as_ref().and_then(|s| s.execution_id.clone()) else {
        return Ok(Action::await_change());
    };
    // As the requester it was submitted as (the configured identity may have changed since).
    let who = obj
        .status
        .as_ref()
        .and_then(|s| s.requester.clone())
        .unwrap_or_else(|| requester(ctx, &obj.namespace().unwrap_or_default()));
    match ctx
        .engine
        .cancel(&id, "the KubernetesExecution was deleted", &who)
        .await
    {
        Ok(view) => {
            tracing::info!(execution_id = %id, state = view.state.as_str(), "KubernetesExecution deleted: execution cancelled")
        }
        // Already over (or forgotten): nothing to stop.
        Err(EngineError::FailedPrecondition(_) | EngineError::NotFound(_)) => {}
        // Refused by the rules: the object still goes, or it could never be deleted; the
        // execution runs to its end.
        Err(EngineError::PermissionDenied(why)) => {
            tracing::warn!(execution_id = %id, %why, "KubernetesExecution deleted; its execution could not be cancelled")
        }
        Err(e) => return Err(e.into()),
    }
    Ok(Action::await_change())
}

/// The retry delay after a failed reconcile.
pub fn error_policy(
    _obj: Arc<KubernetesExecution>,
    error: &ReconcileError,
    _ctx: Arc<Context>,
) -> Action {
    tracing::warn!(error = %error, "KubernetesExecution reconcile failed; retrying");
    Action::requeue(Duration::from_secs(2))
}
