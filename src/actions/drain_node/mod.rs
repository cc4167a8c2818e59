//! `drain_node`: `kubectl drain` — cordon the node, then evict its pods through the policy/v1
//! Eviction API and wait until each is gone.
//!
//! The semantics are kubectl's (`k8s.io/kubectl/pkg/drain`), with one deliberate difference:
//! - pods are found by `spec.nodeName`, and kubectl's filters run in kubectl's order: deleted
//!   pods, DaemonSet-managed (skipped with a warning, or fatal without `ignore_daemonsets`),
//!   mirror pods (skipped), emptyDir (fatal without `delete_emptydir_data`), unmanaged (fatal
//!   without `force`); finished pods can always go;
//! - evictions run concurrently; a 429 (a PodDisruptionBudget forbids it now) is retried every
//!   `eviction_retry_seconds` (kubectl: 5 s) with a progress event naming the budget(s);
//! - a pod counts as gone once it is deleted or replaced by a pod of the same name with a new
//!   UID; the whole drain runs under `timeout_seconds`.
//!
//! The difference: kubectl cordons first and filters afterwards, so a fatal filter leaves the
//! node cordoned. Here any fatal filter aborts before anything is cordoned or evicted, and a
//! drain that fails after it cordoned the node uncordons it again (if it was schedulable).
//! The last schedulable node is never drained.
//!
//! This file is the action (parameters, plan, execution); [`filters`] is kubectl's filter
//! chain, [`evictions`] evicts the pods and waits for them to go. The Eviction API call itself
//! and the guard that uncordons a node when a drain stops early are in [`crate::cluster::nodes`].

mod evictions;
mod filters;

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use async_trait::async_trait;
use k8s_openapi::api::{core::v1::Pod, policy::v1::PodDisruptionBudget};
use kube::{api::ListParams, Api, ResourceExt};
use serde::Deserialize;
use serde_json::{json, Value};

use self::{evictions::Evictions, filters::filter_node};
use super::{
    cordon_node::{cordon_checked, ensure_not_last_schedulable, nodes},
    Access, ActionContext, ActionError, ActionSpec, Change, Outcome, ParamSpec, ParamType, Plan,
    Remediation, Risk, Update,
};
use crate::cluster::{
    controller_ref,
    nodes::{is_cordoned, is_schedulable, pdbs_selecting, set_unschedulable, UncordonOnDrop},
};

/// kubectl drain's default retry delay after a 429 from the eviction API (`EvictErrorRetryDelay`).
pub const DEFAULT_EVICTION_RETRY_SECONDS: i64 = 5;
/// Default drain timeout: long enough for a budget of one to let a handful of pods through,
/// bounded so that a stuck drain ends and gives the node back.
pub const DEFAULT_TIMEOUT_SECONDS: i64 = 300;
/// Longest drain we accept: beyond an hour a drain is maintenance, not a remediation.
pub const MAX_TIMEOUT_SECONDS: i64 = 3600;
/// Longest termination grace period we pass on (a longer one would outlive any timeout).
pub const MAX_GRACE_PERIOD_SECONDS: i64 = 3600;

#[derive(Debug, Clone, Deserialize)]
struct Params {
    grace_period_seconds: Option<i64>,
    timeout_seconds: u64,
    ignore_daemonsets: bool,
    delete_emptydir_data: bool,
    force: bool,
    eviction_retry_seconds: u64,
}

/// What `drain_node` calls in the cluster (see [`ActionSpec::access`]).
const ACCESS: &[Access] = &[
    // The node is read and cordoned (uncordoned again when the drain fails); the nodes are listed
    // so the last schedulable one is never drained (and by the engine for the policy's facts).
    Access::new("", &["nodes"], &["get", "list", "patch"]),
    // The node's pods are listed in every namespace; each evicted pod is read again and awaited
    // gone with a watch.
    Access::new("", &["pods"], &["get", "list", "watch"]),
    // Evictions through the Eviction API, so PodDisruptionBudgets hold.
    Access::new("", &["pods/eviction"], &["create"]),
    // kubectl's filter: a pod's DaemonSet is looked up.
    Access::new("apps", &["daemonsets"], &["get"]),
    // The budgets guarding the pods, reported when they block an eviction.
    Access::new("policy", &["poddisruptionbudgets"], &["list"]),
];

pub struct DrainNode {
    spec: ActionSpec,
}

impl DrainNode {
    pub fn new() -> Self {
        DrainNode {
            spec: ActionSpec {
                name: "drain_node",
                description:
                    "Cordon a node and evict its pods through the Eviction API, honouring \
                              PodDisruptionBudgets, until none is left (kubectl drain); uncordons \
                              again if the drain fails.",
                risk: Risk::High,
                access: ACCESS,
                target_kinds: &["Node"],
                params: vec![
                    ParamSpec::new(
                        "grace_period_seconds",
                        ParamType::Integer,
                        "Termination grace period for each pod; -1 or absent = the pod's own.",
                    )
                    .bounds(-1, MAX_GRACE_PERIOD_SECONDS),
                    ParamSpec::new(
                        "timeout_seconds",
                        ParamType::Integer,
                        "Give up (and uncordon) when pods are left after this long.",
                    )
                    .bounds(1, MAX_TIMEOUT_SECONDS)
                    .default(DEFAULT_TIMEOUT_SECONDS),
                    ParamSpec::new(
                        "ignore_daemonsets",
                        ParamType::Boolean,
                        "Skip DaemonSet-managed pods (otherwise they make the drain fail).",
                    )
                    .default(true),
                    ParamSpec::new(
                        "delete_emptydir_data",
                        ParamType::Boolean,
                        "Evict pods using emptyDir volumes (their data is lost).",
                    )
                    .default(false),
                    ParamSpec::new(
                        "force",
                        ParamType::Boolean,
                        "Evict pods that declare no controller (they will not come back).",
                    )
                    .default(false),
                    ParamSpec::new(
                        "eviction_retry_seconds",
                        ParamType::Integer,
                        "Delay before retrying an eviction a PodDisruptionBudget refused.",
                    )
                    .bounds(1, 60)
                    .default(DEFAULT_EVICTION_RETRY_SECONDS),
                ],
            },
        }
    }
}

/// `namespace/name`, as kubectl names a pod in its drain messages.
fn pod_ref(pod: &Pod) -> String {
    format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any())
}

/// The budgets guarding `pods`, by budget (`namespace/name`): the budget and the pods it
/// guards.
async fn budgets_for(
    ctx: &ActionContext,
    pods: &[Pod],
) -> Result<BTreeMap<String, (PodDisruptionBudget, Vec<String>)>, ActionError> {
    let namespaces: BTreeSet<String> = pods.iter().filter_map(|p| p.namespace()).collect();
    let mut pdbs = Vec::new();
    for ns in namespaces {
        let api: Api<PodDisruptionBudget> = Api::namespaced(ctx.client.clone(), &ns);
        pdbs.extend(api.list(&ListParams::default()).await?.items);
    }
    let mut out: BTreeMap<String, (PodDisruptionBudget, Vec<String>)> = BTreeMap::new();
    for pod in pods {
        for pdb in pdbs_selecting(&pdbs, pod) {
            out.entry(format!(
                "{}/{}",
                pdb.namespace().unwrap_or_default(),
                pdb.name_any()
            ))
            .or_insert_with(|| (pdb.clone(), Vec::new()))
            .1
            .push(pod_ref(pod));
        }
    }
    Ok(out)
}

fn disruptions_allowed(pdb: &PodDisruptionBudget) -> i32 {
    pdb.status.as_ref().map_or(0, |s| s.disruptions_allowed)
}

#[async_trait]
impl Remediation for DrainNode {
    fn spec(&self) -> &ActionSpec {
        &self.spec
    }

    async fn plan(&self, ctx: &ActionContext) -> Result<Plan, ActionError> {
        let p: Params = ctx.params()?;
        let name = &ctx.target.name;
        let filtered = filter_node(ctx, &p).await?;
        let api = nodes(ctx);
        ensure_not_last_schedulable(&api, &filtered.node, "drain").await?;
        let mut changes = Vec::new();
        if !is_cordoned(&filtered.node) {
            // Server-side dry run of kubectl's cordon patch.
            let after = set_unschedulable(&api, name, true, true).await?;
            changes.push(Change::update(
                format!("node/{name}"),
                format!("node {name}: cordon (spec.unschedulable → true)"),
                &filtered.node,
                &after,
            ));
        }
        for pod in &filtered.evict {
            changes.push(Change::delete(
                format!(
                    "{}/pod/{}",
                    pod.namespace().unwrap_or_default(),
                    pod.name_any()
                ),
                format!("evict pod {}", pod_ref(pod)),
                pod,
            ));
        }
        let n = filtered.evict.len();
        let mut warnings: Vec<String> = filtered.warnings.clone();
        for (budget, (pdb, pods)) in budgets_for(ctx, &filtered.evict).await? {
            let allowed = disruptions_allowed(&pdb);
            warnings.push(if allowed > 0 {
                format!(
                    "drain evicts {n} pods; PDB {budget} allows {allowed} at a time ({} of them: {})",
                    pods.len(),
                    pods.join(", ")
                )
            } else {
                format!(
                    "drain evicts {n} pods; PDB {budget} allows no disruption now: evicting {} waits until it does (or the drain times out)",
                    pods.join(", ")
                )
            });
        }
        let mut summary = format!("node {name}: cordon and evict {n} pods");
        if !filtered.skipped.is_empty() {
            summary.push_str(&format!(", skip {}", filtered.skipped.len()));
        }
        Ok(Plan {
            summary,
            changes,
            warnings,
        })
    }

    async fn execute(&self, ctx: &ActionContext) -> Result<Outcome, ActionError> {
        let p: Params = ctx.params()?;
        let name = ctx.target.name.clone();
        let filtered = filter_node(ctx, &p).await?;
        let api = nodes(ctx);
        let was_schedulable = is_schedulable(&filtered.node);
        let was_cordoned = is_cordoned(&filtered.node);
        ctx.reporter.rollback_data(json!({
            "kind": "Node",
            "name": name,
            "unschedulable": was_cordoned,
            "evicted_pods": filtered.evict.iter().map(|pod| json!({
                "namespace": pod.namespace(),
                "name": pod.name_any(),
                "uid": pod.metadata.uid,
                "controller": controller_ref(&pod.metadata).map(|o| format!("{}/{}", o.kind, o.name)),
            })).collect::<Vec<_>>(),
        }));

        // Cordon (the last-schedulable check runs again under the scheduling lock).
        let mut guard = UncordonOnDrop::new(api.clone(), &name);
        if was_cordoned {
            ctx.reporter
                .progress(Update::new(format!("node {name} already cordoned")));
        } else {
            cordon_checked(&api, &filtered.node, "drain", false).await?;
            // Only a node that was schedulable is given back on failure.
            if was_schedulable {
                guard.arm();
            }
            ctx.reporter
                .progress(Update::new(format!("node {name} cordoned")));
        }
        if !filtered.warnings.is_empty() {
            ctx.reporter.progress(
                Update::new(format!("Warning: {}", filtered.warnings.join("; ")))
                    .details(json!({ "warnings": filtered.warnings })),
            );
        }

        let total = filtered.evict.len();
        let evictions = Evictions::new(
            ctx,
            p.grace_period_seconds.filter(|g| *g >= 0),
            Duration::from_secs(p.eviction_retry_seconds),
            &filtered.evict,
        );
        let timeout = Duration::from_secs(p.timeout_seconds);
        let all = evictions.evict_all(&filtered.evict);
        let failure = match tokio::time::timeout(timeout, all).await {
            Ok(result) => result.err(),
            Err(_) => {
                let left: Vec<String> = evictions.left().into_iter().collect();
                Some(format!(
                    "drain of node {name} timed out after {}s with {} of {total} pods left: {}",
                    p.timeout_seconds,
                    left.len(),
                    left.join(", ")
                ))
            }
        };

        let evicted = evictions.evicted();
        let skipped: Vec<Value> = filtered
            .skipped
            .iter()
            .map(|(pod, reason)| json!({ "pod": pod, "reason": reason }))
            .collect();
        if let Some(message) = failure {
            let mut message = message;
            if guard.disarm() {
                match set_unschedulable(&api, &name, false, false).await {
                    Ok(_) => {
                        ctx.reporter.progress(Update::new(format!(
                            "drain failed: node {name} uncordoned again (it was schedulable before)"
                        )));
                        message.push_str(&format!("; node {name} was uncordoned again"));
                    }
                    Err(e) => {
                        ctx.reporter.progress(Update::new(format!(
                            "drain failed and uncordoning node {name} failed too: {e}"
                        )));
                        message.push_str(&format!(
                            "; uncordoning node {name} failed ({e}): it is still cordoned"
                        ));
                    }
                }
            }
            return Err(ActionError::Precondition(message));
        }
        guard.disarm();
        let left = evictions.left();
        let evicted_pods: Vec<String> = filtered
            .evict
            .iter()
            .map(pod_ref)
            .filter(|r| !left.contains(r))
            .collect();
        Ok(Outcome {
            message: format!(
                "node {name} drained: {evicted} pods evicted, {} skipped",
                skipped.len()
            ),
            result: json!({
                "node": name,
                "cordoned": true,
                "evicted": evicted_pods,
                "skipped": skipped,
                "warnings": filtered.warnings,
            }),
        })
    }
}
