//! Restarting a set of workloads one after another, each as `kubectl rollout restart` does
//! and followed with kubectl's rollout-status rules before the next starts: shared by
//! `restart_network` (CNI DaemonSets, then DNS) and `reset_service_mesh` (the control plane,
//! then the meshed workloads). Every template is recorded before the first restart, and a
//! rollback puts each back.

use serde_json::{json, Value};

use super::{
    restarting::{now, patch_params, restart_patch, RESTARTED_AT},
    workload, ActionContext, ActionError, Change, Outcome, Plan, Update,
};
use crate::cluster::WorkloadKind;

/// One workload of the set.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Member {
    pub kind: WorkloadKind,
    pub namespace: String,
    pub name: String,
}

impl Member {
    pub fn object_ref(&self) -> String {
        workload::object_ref(&self.namespace, self.kind, &self.name)
    }

    /// `ctx` aimed at this workload (the workload helpers work on the context's target).
    fn context(&self, ctx: &ActionContext) -> ActionContext {
        let mut aimed = ctx.clone();
        aimed.target.namespace = self.namespace.clone();
        aimed.target.kind = self.kind.kind().to_string();
        aimed.target.name = self.name.clone();
        aimed
    }
}

/// The workloads of `kind` in `namespace`, as `(name, object)`.
pub(super) async fn list(
    ctx: &ActionContext,
    kind: WorkloadKind,
    namespace: &str,
) -> Result<Vec<(String, Value)>, ActionError> {
    let api = kind.api(&ctx.client, namespace);
    let all = kube::api::ListParams::default();
    let listed = ctx
        .retry(
            &format!("list {}s in {namespace}", kind.kind().to_lowercase()),
            || api.list(&all),
        )
        .await?;
    Ok(listed
        .items
        .into_iter()
        .map(|o| (o.metadata.name.clone().unwrap_or_default(), o.data))
        .collect())
}

/// One change per member: its restart as the API server's dry run answers it.
pub(super) async fn plan(
    ctx: &ActionContext,
    members: &[Member],
) -> Result<Vec<Change>, ActionError> {
    let at = now();
    let mut changes = Vec::with_capacity(members.len());
    for (i, member) in members.iter().enumerate() {
        let before = workload::get(&member.context(ctx), member.kind, &member.name).await?;
        let after = member
            .kind
            .api(&ctx.client, &member.namespace)
            .patch(&member.name, &patch_params(true), &restart_patch(&at))
            .await?;
        let object = member.object_ref();
        changes.push(Change::update(
            object.clone(),
            format!(
                "{object}: rolling restart {} of {} ({RESTARTED_AT} = {at})",
                i + 1,
                members.len()
            ),
            &before,
            &after,
        ));
    }
    Ok(changes)
}

/// Restarts the members in order, each followed to the end when `wait`; returns their
/// references.
pub(super) async fn run(
    ctx: &ActionContext,
    members: &[Member],
    wait: bool,
) -> Result<Vec<String>, ActionError> {
    let mut recorded = Vec::with_capacity(members.len());
    for member in members {
        let before = workload::get(&member.context(ctx), member.kind, &member.name).await?;
        recorded.push(json!({
            "kind": member.kind.kind(),
            "namespace": member.namespace,
            "name": member.name,
            "template": before.data.pointer("/spec/template"),
        }));
    }
    ctx.reporter.rollback_data(json!({ "members": recorded }));
    let total = members.len() as u64;
    let mut done = Vec::with_capacity(members.len());
    for (i, member) in members.iter().enumerate() {
        let object = member.object_ref();
        let at = now();
        let api = member.kind.api(&ctx.client, &member.namespace);
        let (params, patch) = (patch_params(false), restart_patch(&at));
        ctx.retry(&format!("restart {object}"), || {
            api.patch(&member.name, &params, &patch)
        })
        .await?;
        ctx.reporter.progress(
            Update::new(format!("{object}: restarted ({} of {total})", i + 1))
                .progress(i as u64, total),
        );
        if wait {
            workload::follow(
                &member.context(ctx),
                member.kind,
                &member.name,
                workload::updated_pods,
            )
            .await?;
        }
        done.push(object);
        ctx.reporter.progress(
            Update::new(format!("{} of {total} done", i + 1)).progress(i as u64 + 1, total),
        );
    }
    Ok(done)
}

/// Puts every recorded template back, in the reverse order, each followed.
pub(super) async fn restore(ctx: &ActionContext, data: &Value) -> Result<Outcome, ActionError> {
    let members = data["members"]
        .as_array()
        .ok_or_else(|| ActionError::Internal("rollback data lists no workloads".into()))?;
    let mut restored = Vec::new();
    for recorded in members.iter().rev() {
        let member = Member {
            kind: recorded["kind"]
                .as_str()
                .and_then(WorkloadKind::from_kind)
                .ok_or_else(|| ActionError::Internal("rollback data names no kind".into()))?,
            namespace: recorded["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            name: recorded["name"].as_str().unwrap_or_default().to_string(),
        };
        workload::restore_template(&member.context(ctx), recorded).await?;
        restored.push(member.object_ref());
    }
    Ok(Outcome {
        message: format!("restored {}", restored.join(", ")),
        result: json!({ "restored": restored }),
    })
}

/// The plan of restarting `members` in order, summed up as `what` (`restart the network in
/// kube-system`).
pub(super) async fn plan_all(
    ctx: &ActionContext,
    members: &[Member],
    what: &str,
) -> Result<Plan, ActionError> {
    Ok(Plan {
        summary: format!(
            "{what}: {}",
            members
                .iter()
                .map(Member::object_ref)
                .collect::<Vec<_>>()
                .join(", then ")
        ),
        changes: plan(ctx, members).await?,
        warnings: Vec::new(),
    })
}

/// Restarts `members` in order ([`run`]); the outcome says `done` (`network restarted in
/// kube-system`) and lists them.
pub(super) async fn run_all(
    ctx: &ActionContext,
    members: &[Member],
    wait: bool,
    done: &str,
) -> Result<Outcome, ActionError> {
    let restarted = run(ctx, members, wait).await?;
    Ok(Outcome {
        message: format!("{done}: {}", restarted.join(", ")),
        result: json!({ "restarted": restarted }),
    })
}
