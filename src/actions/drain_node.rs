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

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
    time::Duration,
};

use async_trait::async_trait;
use futures::future::join_all;
use k8s_openapi::{
    api::{
        apps::v1::DaemonSet,
        core::v1::{Node, Pod},
        policy::v1::{Eviction, PodDisruptionBudget},
    },
    apimachinery::pkg::apis::meta::v1::{DeleteOptions, ObjectMeta, Preconditions},
};
use kube::{
    api::ListParams,
    runtime::{conditions, wait::await_condition},
    Api, ResourceExt,
};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    cordon_node::{cordon_checked, ensure_not_last_schedulable, get_node, nodes},
    ActionContext, ActionError, ActionSpec, Change, Outcome, ParamSpec, ParamType, Plan,
    Remediation, Risk, Update,
};
use crate::cluster::nodes::{is_cordoned, is_schedulable, pdbs_selecting, set_unschedulable};

/// kubectl drain's default retry delay after a 429 from the eviction API (`EvictErrorRetryDelay`).
pub const DEFAULT_EVICTION_RETRY_SECONDS: i64 = 5;
/// Default drain timeout: long enough for a budget of one to let a handful of pods through,
/// bounded so that a stuck drain ends and gives the node back.
pub const DEFAULT_TIMEOUT_SECONDS: i64 = 300;
/// Longest drain we accept: beyond an hour a drain is maintenance, not a remediation.
pub const MAX_TIMEOUT_SECONDS: i64 = 3600;
/// Longest termination grace period we pass on (a longer one would outlive any timeout).
pub const MAX_GRACE_PERIOD_SECONDS: i64 = 3600;
/// kubectl's page size when listing the node's pods (`--chunk-size`).
const LIST_CHUNK: u32 = 500;

/// The annotation that marks a mirror pod (a static pod's API copy; the kubelet owns it).
const MIRROR_POD_ANNOTATION: &str = "kubernetes.io/config.mirror";

// kubectl's filter messages (`k8s.io/kubectl/pkg/drain/filters.go`), kept word for word so
// that operators recognize them; each flag maps to the parameter of the same name.
const DAEMONSET_FATAL: &str = "DaemonSet-managed Pods (use --ignore-daemonsets to ignore)";
const DAEMONSET_WARNING: &str = "ignoring DaemonSet-managed Pods";
const LOCAL_STORAGE_FATAL: &str =
    "Pods with local storage (use --delete-emptydir-data to override)";
const LOCAL_STORAGE_WARNING: &str = "deleting Pods with local storage";
const UNMANAGED_FATAL: &str = "Pods declare no controller (use --force to override)";
const UNMANAGED_WARNING: &str = "deleting Pods that declare no controller";
const MIRROR_SKIP: &str = "mirror pod (managed by the kubelet)";

#[derive(Debug, Clone, Deserialize)]
struct Params {
    grace_period_seconds: Option<i64>,
    timeout_seconds: u64,
    ignore_daemonsets: bool,
    delete_emptydir_data: bool,
    force: bool,
    eviction_retry_seconds: u64,
}

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

/// kubectl's `PodDeleteStatus`: what one filter says about one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Okay,
    Skip(String),
    Warning { delete: bool, message: String },
    Error(String),
}

impl Verdict {
    fn delete(&self) -> bool {
        match self {
            Verdict::Okay => true,
            Verdict::Warning { delete, .. } => *delete,
            Verdict::Skip(_) | Verdict::Error(_) => false,
        }
    }
}

/// The DaemonSet controlling a pod, as the DaemonSet filter found it.
#[derive(Debug, Clone)]
enum DaemonSetLookup {
    Found,
    NotFound(String),
    Failed(String),
}

/// What the filters decided for one pod.
#[derive(Debug, Clone)]
struct Decision {
    pod: Pod,
    /// The last verdict of the chain (kubectl's status).
    verdict: Verdict,
    /// Every warning met on the way (kubectl keeps only the last; we keep all).
    warnings: Vec<String>,
}

fn pod_ref(pod: &Pod) -> String {
    format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any())
}

fn is_finished(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    )
}

fn controller_of(
    pod: &Pod,
) -> Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference> {
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
}

/// kubectl's `skipDeletedFilter`. It skips pods deleted more than
/// `--skip-wait-for-delete-timeout` seconds ago; kubectl's default (0) skips nothing, and this
/// action keeps that default: a terminating pod is still waited for.
fn skip_deleted_filter(_pod: &Pod) -> Verdict {
    Verdict::Okay
}

/// kubectl's `daemonSetFilter`.
fn daemonset_filter(pod: &Pod, p: &Params, lookup: Option<&DaemonSetLookup>) -> Verdict {
    let Some(owner) = controller_of(pod).filter(|o| o.kind == "DaemonSet") else {
        return Verdict::Okay;
    };
    if is_finished(pod) {
        return Verdict::Okay;
    }
    match lookup {
        Some(DaemonSetLookup::Found) => {}
        Some(DaemonSetLookup::NotFound(e)) if p.force => {
            return Verdict::Warning {
                delete: true,
                message: e.clone(),
            }
        }
        Some(DaemonSetLookup::NotFound(e)) | Some(DaemonSetLookup::Failed(e)) => {
            return Verdict::Error(e.clone())
        }
        None => {
            return Verdict::Error(format!(
                "daemonsets.apps {:?} was not looked up",
                owner.name
            ))
        }
    }
    if !p.ignore_daemonsets {
        return Verdict::Error(DAEMONSET_FATAL.into());
    }
    Verdict::Warning {
        delete: false,
        message: DAEMONSET_WARNING.into(),
    }
}

/// kubectl's `mirrorPodFilter`.
fn mirror_pod_filter(pod: &Pod) -> Verdict {
    if pod.annotations().contains_key(MIRROR_POD_ANNOTATION) {
        Verdict::Skip(MIRROR_SKIP.into())
    } else {
        Verdict::Okay
    }
}

/// kubectl's `localStorageFilter`: emptyDir volumes.
fn local_storage_filter(pod: &Pod, p: &Params) -> Verdict {
    let has_empty_dir = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .is_some_and(|vs| vs.iter().any(|v| v.empty_dir.is_some()));
    if !has_empty_dir || is_finished(pod) {
        return Verdict::Okay;
    }
    if !p.delete_emptydir_data {
        return Verdict::Error(LOCAL_STORAGE_FATAL.into());
    }
    Verdict::Warning {
        delete: true,
        message: LOCAL_STORAGE_WARNING.into(),
    }
}

/// kubectl's `unreplicatedFilter`.
fn unreplicated_filter(pod: &Pod, p: &Params) -> Verdict {
    if is_finished(pod) || controller_of(pod).is_some() {
        return Verdict::Okay;
    }
    if p.force {
        return Verdict::Warning {
            delete: true,
            message: UNMANAGED_WARNING.into(),
        };
    }
    Verdict::Error(UNMANAGED_FATAL.into())
}

/// Runs kubectl's filters in kubectl's order, stopping at the first that keeps the pod.
fn decide(pod: &Pod, p: &Params, lookup: Option<&DaemonSetLookup>) -> Decision {
    let filters: [&dyn Fn() -> Verdict; 5] = [
        &|| skip_deleted_filter(pod),
        &|| daemonset_filter(pod, p, lookup),
        &|| mirror_pod_filter(pod),
        &|| local_storage_filter(pod, p),
        &|| unreplicated_filter(pod, p),
    ];
    let mut verdict = Verdict::Okay;
    let mut warnings = Vec::new();
    for filter in filters {
        verdict = filter();
        if let Verdict::Warning { message, .. } = &verdict {
            warnings.push(message.clone());
        }
        if !verdict.delete() {
            break;
        }
    }
    Decision {
        pod: pod.clone(),
        verdict,
        warnings,
    }
}

/// `message: ns/a, ns/b` per distinct message, sorted, as kubectl groups pods by message.
fn group_by_message<'a>(items: impl Iterator<Item = (&'a str, String)>) -> Vec<String> {
    let mut groups: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (message, pod) in items {
        groups.entry(message).or_default().push(pod);
    }
    groups
        .into_iter()
        .map(|(message, pods)| format!("{message}: {}", pods.join(", ")))
        .collect()
}

/// The filter outcome for a node.
struct Filtered {
    node: Node,
    evict: Vec<Pod>,
    skipped: Vec<(String, String)>,
    /// kubectl's warning line, grouped by message.
    warnings: Vec<String>,
}

/// Lists the node's pods (all namespaces, `spec.nodeName`, in pages like kubectl) and runs
/// the filters.
///
/// # Errors
/// [`ActionError::Precondition`] when a filter is fatal for any pod, with kubectl's
/// `cannot delete …` lines; API errors.
async fn filter_node(ctx: &ActionContext, p: &Params) -> Result<Filtered, ActionError> {
    let node = get_node(ctx).await?;
    let name = &ctx.target.name;
    let pods_api: Api<Pod> = Api::all(ctx.client.clone());
    let mut pods = Vec::new();
    let mut list_params = ListParams::default()
        .fields(&format!("spec.nodeName={name}"))
        .limit(LIST_CHUNK);
    loop {
        let page = pods_api.list(&list_params).await?;
        pods.extend(page.items);
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => list_params = list_params.continue_token(&token),
            None => break,
        }
    }
    pods.sort_by_key(pod_ref);
    let mut lookups: BTreeMap<(String, String), DaemonSetLookup> = BTreeMap::new();
    for pod in &pods {
        let Some(owner) = controller_of(pod).filter(|o| o.kind == "DaemonSet") else {
            continue;
        };
        let key = (pod.namespace().unwrap_or_default(), owner.name.clone());
        if lookups.contains_key(&key) {
            continue;
        }
        let api: Api<DaemonSet> = Api::namespaced(ctx.client.clone(), &key.0);
        let lookup = match api.get(&key.1).await {
            Ok(_) => DaemonSetLookup::Found,
            Err(kube::Error::Api(s)) if s.code == 404 => {
                DaemonSetLookup::NotFound(format!("daemonsets.apps {:?} not found", key.1))
            }
            Err(e) => DaemonSetLookup::Failed(e.to_string()),
        };
        lookups.insert(key, lookup);
    }
    let decisions: Vec<Decision> = pods
        .iter()
        .map(|pod| {
            let key =
                controller_of(pod).map(|o| (pod.namespace().unwrap_or_default(), o.name.clone()));
            decide(pod, p, key.and_then(|k| lookups.get(&k)))
        })
        .collect();
    let errors = group_by_message(decisions.iter().filter_map(|d| match &d.verdict {
        Verdict::Error(message) => Some((message.as_str(), pod_ref(&d.pod))),
        _ => None,
    }));
    if !errors.is_empty() {
        let lines: Vec<String> = errors
            .iter()
            .map(|e| format!("cannot delete {e}"))
            .collect();
        return Err(ActionError::Precondition(format!(
            "unable to drain node {name:?}: {}; nothing was cordoned or evicted",
            lines.join("; ")
        )));
    }
    let warnings = group_by_message(
        decisions
            .iter()
            .flat_map(|d| d.warnings.iter().map(|w| (w.as_str(), pod_ref(&d.pod)))),
    );
    let mut evict = Vec::new();
    let mut skipped = Vec::new();
    for d in decisions {
        match d.verdict {
            v if v.delete() => evict.push(d.pod),
            Verdict::Skip(reason)
            | Verdict::Warning {
                message: reason, ..
            } => skipped.push((pod_ref(&d.pod), reason)),
            // Errors returned above; Okay always deletes.
            Verdict::Okay | Verdict::Error(_) => {}
        }
    }
    Ok(Filtered {
        node,
        evict,
        skipped,
        warnings,
    })
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

/// Posts a policy/v1 Eviction for `pod`, exactly as kubectl does.
///
/// Not `kube::Api::evict`: kube 5.0 serializes the body's delete options as `delete_options`,
/// which the API server ignores, so a grace period (and the UID precondition) would be lost.
async fn evict(client: &kube::Client, pod: &Pod, grace: Option<i64>) -> Result<(), kube::Error> {
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let eviction = Eviction {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        delete_options: Some(DeleteOptions {
            grace_period_seconds: grace,
            // Evict exactly the pod we filtered, never a namesake created since.
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        }),
    };
    let body = serde_json::to_vec(&eviction).map_err(kube::Error::SerdeError)?;
    let request = http::Request::post(format!("/api/v1/namespaces/{ns}/pods/{name}/eviction"))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body)
        .map_err(kube::Error::HttpError)?;
    client.request::<Value>(request).await.map(|_| ())
}

/// Shared state of one drain's evictions.
struct Evictions<'a> {
    ctx: &'a ActionContext,
    grace: Option<i64>,
    retry: Duration,
    total: u64,
    done: AtomicU64,
    /// Pods not yet gone, as `namespace/name`.
    left: Mutex<BTreeSet<String>>,
    /// Held across "check the budgets, post the eviction" for pods that a budget guards.
    budget_turn: tokio::sync::Mutex<()>,
}

impl Evictions<'_> {
    fn finish(&self, pod: &Pod) {
        let reference = pod_ref(pod);
        self.left
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&reference);
        let k = self.done.fetch_add(1, Ordering::SeqCst) + 1;
        self.ctx.reporter.progress(
            Update::new(format!("pod {reference} evicted ({k} of {})", self.total))
                .progress(k, self.total)
                .details(json!({ "pod": reference, "evicted": k, "total": self.total })),
        );
    }

    /// The budgets that guard `pod` now.
    async fn budgets_of(&self, pod: &Pod) -> Vec<PodDisruptionBudget> {
        let api: Api<PodDisruptionBudget> = Api::namespaced(
            self.ctx.client.clone(),
            &pod.namespace().unwrap_or_default(),
        );
        match api.list(&ListParams::default()).await {
            Ok(list) => pdbs_selecting(&list.items, pod)
                .into_iter()
                .cloned()
                .collect(),
            Err(e) => {
                tracing::debug!(error = %e, "listing PodDisruptionBudgets");
                Vec::new()
            }
        }
    }

    /// Reports that `pod` cannot be evicted yet because of `budgets` and waits the retry
    /// delay (kubectl: `error when evicting pods/… (will retry after 5s)`).
    async fn wait_for_budget(&self, pod: &Pod, budgets: &[PodDisruptionBudget], why: &str) {
        let reference = pod_ref(pod);
        let names: Vec<String> = budgets.iter().map(|b| b.name_any()).collect();
        let which = if names.is_empty() {
            "the API server refused the eviction".to_string()
        } else {
            names
                .iter()
                .map(|b| format!("PodDisruptionBudget {b}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        self.ctx.reporter.progress(
            Update::new(format!(
                "cannot evict pod {reference} yet: {which} {why}; will retry after {}s",
                self.retry.as_secs()
            ))
            .details(json!({
                "pod": reference,
                "pod_disruption_budgets": names,
                "retry_seconds": self.retry.as_secs(),
                "reason": why,
            })),
        );
        tokio::time::sleep(self.retry).await;
    }

    /// Evicts `pod`, retrying while a budget forbids it, then waits until it is gone.
    ///
    /// kube's client retries a 429 by itself (with its own backoff, silently), so a refusal
    /// would rarely reach us; the budget is therefore also checked before each eviction,
    /// the way the API server checks it: a budget whose status allows no disruption blocks
    /// the eviction of a healthy pod, and of an unhealthy one while the budget is not met.
    /// Guarded pods go through the check and the eviction one at a time, so two evictions
    /// cannot both spend a budget of one.
    ///
    /// # Errors
    /// kubectl's `error when evicting …` / `error when waiting …` line.
    async fn evict_and_wait(&self, pod: &Pod) -> Result<(), String> {
        let client = &self.ctx.client;
        let ns = pod.namespace().unwrap_or_default();
        let name = pod.name_any();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let reference = pod_ref(pod);
        self.ctx.reporter.progress(
            Update::new(format!("evicting pod {reference}")).details(json!({ "pod": reference })),
        );
        let mut current = pod.clone();
        loop {
            let budgets = self.budgets_of(&current).await;
            let turn = if budgets.is_empty() {
                None
            } else {
                Some(self.budget_turn.lock().await)
            };
            let exhausted: Vec<PodDisruptionBudget> = if turn.is_some() {
                // Re-read under the turn: the eviction before ours may have spent the budget.
                self.budgets_of(&current)
                    .await
                    .into_iter()
                    .filter(|b| blocks(b, &current))
                    .collect()
            } else {
                Vec::new()
            };
            if !exhausted.is_empty() {
                drop(turn);
                let why = exhausted
                    .iter()
                    .map(|b| {
                        let status = b.status.clone().unwrap_or_default();
                        format!(
                            "allows no more disruptions right now (status: {} allowed, {} healthy, {} needed)",
                            status.disruptions_allowed, status.current_healthy, status.desired_healthy
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
                self.wait_for_budget(&current, &exhausted, &why).await;
            } else {
                let result = evict(client, &current, self.grace).await;
                drop(turn);
                match result {
                    Ok(()) => break,
                    Err(kube::Error::Api(s)) if s.code == 404 => {
                        self.finish(pod);
                        return Ok(());
                    }
                    Err(kube::Error::Api(s)) if s.code == 429 => {
                        let why = format!("refused it ({})", s.message);
                        self.wait_for_budget(&current, &budgets, &why).await;
                    }
                    // The UID precondition failed: the pod was replaced by a namesake.
                    Err(kube::Error::Api(s)) if s.code == 409 => break,
                    Err(e) => {
                        return Err(format!("error when evicting pods/{name:?} -n {ns:?}: {e}"))
                    }
                }
            }
            // As kubectl: look again before retrying; a pod gone or replaced meanwhile is done.
            match api.get_opt(&name).await {
                Ok(None) => break,
                Ok(Some(fresh)) if fresh.metadata.uid.as_deref() != Some(uid.as_str()) => break,
                Ok(Some(fresh)) => current = fresh,
                Err(e) => tracing::debug!(error = %e, pod = %reference, "re-reading pod"),
            }
        }
        await_condition(api, &name, conditions::is_deleted(&uid))
            .await
            .map_err(|e| {
                format!("error when waiting for pod {name:?} in namespace {ns:?} to terminate: {e}")
            })?;
        self.finish(pod);
        Ok(())
    }
}

/// Whether `budget`, as its status stands, forbids evicting `pod` now (the eviction API's
/// rule: a healthy pod needs a disruption allowed; an unhealthy one only needs the budget
/// met, since evicting it removes no healthy pod).
fn blocks(budget: &PodDisruptionBudget, pod: &Pod) -> bool {
    let status = budget.status.clone().unwrap_or_default();
    if is_ready(pod) {
        status.disruptions_allowed <= 0
    } else {
        status.current_healthy < status.desired_healthy
    }
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Puts the node back in scheduling if the drain future is dropped (cancelled, or the
/// engine's own timeout) after it cordoned a node that was schedulable.
struct UncordonOnDrop {
    api: Api<Node>,
    node: String,
    armed: bool,
}

impl Drop for UncordonOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (api, node) = (self.api.clone(), self.node.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                match set_unschedulable(&api, &node, false, false).await {
                    Ok(_) => tracing::warn!(%node, "drain stopped early: node uncordoned again"),
                    Err(e) => {
                        tracing::error!(%node, error = %e, "drain stopped early: uncordon failed")
                    }
                }
            });
        }
    }
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
            changes.push(Change {
                object: format!("node/{name}"),
                summary: format!("node {name}: cordon (spec.unschedulable → true)"),
                before: super::comparable(&filtered.node),
                after: super::comparable(&after),
            });
        }
        for pod in &filtered.evict {
            changes.push(Change {
                object: format!(
                    "{}/pod/{}",
                    pod.namespace().unwrap_or_default(),
                    pod.name_any()
                ),
                summary: format!("evict pod {}", pod_ref(pod)),
                before: super::comparable(pod),
                after: Value::Null,
            });
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
                "controller": controller_of(pod).map(|o| format!("{}/{}", o.kind, o.name)),
            })).collect::<Vec<_>>(),
        }));

        // Cordon (the last-schedulable check runs again under the scheduling lock).
        let mut guard = UncordonOnDrop {
            api: api.clone(),
            node: name.clone(),
            armed: false,
        };
        if was_cordoned {
            ctx.reporter
                .progress(Update::new(format!("node {name} already cordoned")));
        } else {
            cordon_checked(&api, &filtered.node, "drain", false).await?;
            // Only a node that was schedulable is given back on failure.
            guard.armed = was_schedulable;
            ctx.reporter
                .progress(Update::new(format!("node {name} cordoned")));
        }
        if !filtered.warnings.is_empty() {
            ctx.reporter.progress(
                Update::new(format!("Warning: {}", filtered.warnings.join("; ")))
                    .details(json!({ "warnings": filtered.warnings })),
            );
        }

        let total = filtered.evict.len() as u64;
        let evictions = Evictions {
            ctx,
            grace: p.grace_period_seconds.filter(|g| *g >= 0),
            retry: Duration::from_secs(p.eviction_retry_seconds),
            total,
            done: AtomicU64::new(0),
            left: Mutex::new(filtered.evict.iter().map(pod_ref).collect()),
            budget_turn: tokio::sync::Mutex::new(()),
        };
        let timeout = Duration::from_secs(p.timeout_seconds);
        let all = join_all(
            filtered
                .evict
                .iter()
                .map(|pod| evictions.evict_and_wait(pod)),
        );
        let failure = match tokio::time::timeout(timeout, all).await {
            Ok(results) => {
                let errors: Vec<String> = results.into_iter().filter_map(Result::err).collect();
                (!errors.is_empty()).then(|| errors.join("; "))
            }
            Err(_) => {
                let left: Vec<String> = evictions
                    .left
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .cloned()
                    .collect();
                Some(format!(
                    "drain of node {name} timed out after {}s with {} of {total} pods left: {}",
                    p.timeout_seconds,
                    left.len(),
                    left.join(", ")
                ))
            }
        };

        let evicted = evictions.done.load(Ordering::SeqCst);
        let skipped: Vec<Value> = filtered
            .skipped
            .iter()
            .map(|(pod, reason)| json!({ "pod": pod, "reason": reason }))
            .collect();
        if let Some(message) = failure {
            let mut message = message;
            if guard.armed {
                guard.armed = false;
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
        guard.armed = false;
        let left = evictions
            .left
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_params() -> Params {
        Params {
            grace_period_seconds: None,
            timeout_seconds: 300,
            ignore_daemonsets: true,
            delete_emptydir_data: false,
            force: false,
            eviction_retry_seconds: 5,
        }
    }

    fn mk_pod(owner: Option<&str>, extra: Value) -> Pod {
        let mut pod = json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]},
            "status": {"phase": "Running"},
        });
        if let Some(kind) = owner {
            pod["metadata"]["ownerReferences"] = json!([{
                "apiVersion": "apps/v1", "kind": kind, "name": "owner", "uid": "u", "controller": true
            }]);
        }
        json_patch::merge(&mut pod, &extra);
        serde_json::from_value(pod).unwrap()
    }

    #[test]
    fn a_replicaset_pod_is_evicted() {
        let d = decide(&mk_pod(Some("ReplicaSet"), json!({})), &mk_params(), None);
        assert_eq!(d.verdict, Verdict::Okay);
    }

    #[test]
    fn daemonset_pods_are_skipped_with_a_warning_or_fatal() {
        let pod = mk_pod(Some("DaemonSet"), json!({}));
        let found = DaemonSetLookup::Found;
        let d = decide(&pod, &mk_params(), Some(&found));
        assert_eq!(
            d.verdict,
            Verdict::Warning {
                delete: false,
                message: DAEMONSET_WARNING.into()
            }
        );
        let strict = Params {
            ignore_daemonsets: false,
            ..mk_params()
        };
        assert_eq!(
            decide(&pod, &strict, Some(&found)).verdict,
            Verdict::Error(DAEMONSET_FATAL.into())
        );
        // An orphan (its DaemonSet is gone) goes only with force.
        let gone = DaemonSetLookup::NotFound("daemonsets.apps \"owner\" not found".into());
        assert!(matches!(
            decide(&pod, &mk_params(), Some(&gone)).verdict,
            Verdict::Error(_)
        ));
        let forced = Params {
            force: true,
            ..mk_params()
        };
        assert!(decide(&pod, &forced, Some(&gone)).verdict.delete());
    }

    #[test]
    fn mirror_pods_are_skipped() {
        let pod = mk_pod(
            None,
            json!({"metadata": {"annotations": {MIRROR_POD_ANNOTATION: "x"}}}),
        );
        assert!(matches!(
            decide(&pod, &mk_params(), None).verdict,
            Verdict::Skip(_)
        ));
    }

    #[test]
    fn empty_dir_and_unmanaged_pods_are_fatal_unless_allowed() {
        let empty_dir = json!({"spec": {"volumes": [{"name": "scratch", "emptyDir": {}}]}});
        let pod = mk_pod(Some("ReplicaSet"), empty_dir.clone());
        assert_eq!(
            decide(&pod, &mk_params(), None).verdict,
            Verdict::Error(LOCAL_STORAGE_FATAL.into())
        );
        let allowed = Params {
            delete_emptydir_data: true,
            ..mk_params()
        };
        let d = decide(&pod, &allowed, None);
        assert!(d.verdict.delete());
        assert_eq!(d.warnings, vec![LOCAL_STORAGE_WARNING.to_string()]);
        let lonely = mk_pod(None, json!({}));
        assert_eq!(
            decide(&lonely, &mk_params(), None).verdict,
            Verdict::Error(UNMANAGED_FATAL.into())
        );
        let forced = Params {
            force: true,
            ..mk_params()
        };
        assert!(decide(&lonely, &forced, None).verdict.delete());
    }

    #[test]
    fn finished_pods_can_always_go() {
        let done = json!({"status": {"phase": "Succeeded"},
            "spec": {"volumes": [{"name": "scratch", "emptyDir": {}}]}});
        assert!(decide(&mk_pod(None, done.clone()), &mk_params(), None)
            .verdict
            .delete());
        assert!(decide(&mk_pod(Some("DaemonSet"), done), &mk_params(), None)
            .verdict
            .delete());
    }

    #[test]
    fn messages_group_pods_like_kubectl() {
        let lines = group_by_message(
            [
                ("b", "ns/2".to_string()),
                ("a", "ns/1".to_string()),
                ("b", "ns/3".to_string()),
            ]
            .into_iter(),
        );
        assert_eq!(lines, vec!["a: ns/1", "b: ns/2, ns/3"]);
    }
}
