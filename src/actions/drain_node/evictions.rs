//! Evicting a drain's pods: each through the Eviction API, paced by the PodDisruptionBudgets
//! that guard it (retried every `eviction_retry_seconds` while a budget forbids it, with a
//! progress event naming the budget), then waited for until it is gone. Evictions run
//! concurrently; the caller puts the whole under the drain's timeout.

use std::{
    collections::BTreeSet,
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
    time::Duration,
};

use futures::future::join_all;
use k8s_openapi::api::{core::v1::Pod, policy::v1::PodDisruptionBudget};
use kube::{
    api::ListParams,
    runtime::{conditions, wait::await_condition},
    Api, ResourceExt,
};
use serde_json::json;

use super::pod_ref;
use crate::{
    actions::{ActionContext, Update},
    cluster::nodes::{evict, pdbs_selecting},
};

/// Shared state of one drain's evictions.
pub(super) struct Evictions<'a> {
    ctx: &'a ActionContext,
    /// Termination grace period passed on each eviction; `None`: each pod's own.
    grace: Option<i64>,
    /// Delay before an eviction a budget refused is tried again.
    retry: Duration,
    total: u64,
    done: AtomicU64,
    /// Pods not yet gone, as `namespace/name`.
    left: Mutex<BTreeSet<String>>,
    /// Held across "check the budgets, post the eviction" for pods that a budget guards.
    budget_turn: tokio::sync::Mutex<()>,
}

impl<'a> Evictions<'a> {
    /// The evictions of `pods`, none started yet.
    pub(super) fn new(
        ctx: &'a ActionContext,
        grace: Option<i64>,
        retry: Duration,
        pods: &[Pod],
    ) -> Self {
        Evictions {
            ctx,
            grace,
            retry,
            total: pods.len() as u64,
            done: AtomicU64::new(0),
            left: Mutex::new(pods.iter().map(pod_ref).collect()),
            budget_turn: tokio::sync::Mutex::new(()),
        }
    }

    /// Evicts every pod of `pods` concurrently and waits until all are gone. Runs until done
    /// or failed: put it under a timeout.
    ///
    /// # Errors
    /// kubectl's `error when evicting …` / `error when waiting …` lines, joined by `; `.
    pub(super) async fn evict_all(&self, pods: &[Pod]) -> Result<(), String> {
        let results = join_all(pods.iter().map(|pod| self.evict_and_wait(pod))).await;
        let errors: Vec<String> = results.into_iter().filter_map(Result::err).collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    /// Pods not gone yet, as `namespace/name`.
    pub(super) fn left(&self) -> BTreeSet<String> {
        self.left.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// How many pods are gone so far.
    pub(super) fn evicted(&self) -> u64 {
        self.done.load(Ordering::SeqCst)
    }

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
