//! The Kubernetes door: a `KubernetesExecution` custom resource becomes an execution of the
//! same engine as every other door (validation, policy, authorization, approvals, cooldowns,
//! history), and its status mirrors the execution.
//!
//! - [`resource`]: the resource's Rust types, from which the CRD in `deploy/` is generated.
//! - [`reconcile`]: one reconcile (kube-runtime's controller drives them): accept once per
//!   uid and generation, mirror, approve by annotation, cancel on delete (finalizer).
//! - [`status`]: phases, conditions, and how an engine refusal reads in the status.
//!
//! Every replica may run it: the engine's request_id (`kubernetesexecution/<uid>`)
//! makes two replicas' reconciles of one object land on one execution, and each writes the
//! same status from the shared history.

pub mod reconcile;
pub mod resource;
pub mod status;

use std::{collections::HashSet, sync::Arc, sync::Mutex};

use futures::StreamExt;
use kube::{
    runtime::{watcher, Controller},
    Api,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

pub use resource::{crd_yaml, KubernetesExecution};

use crate::engine::Engine;

/// Hints "reconcile this object again" queued at once; more are dropped (the fallback
/// requeue still comes), so a burst of events cannot grow memory.
const TRIGGER_CAPACITY: usize = 1024;

/// Reconciles running at once: each is short (a submit, a read, a status patch), and the
/// engine's own queue bounds the executions behind them.
const CONCURRENCY: u16 = 16;

/// How the door runs.
#[derive(Debug, Clone, Default)]
pub struct ControllerConfig {
    /// The requester recorded for every execution it creates; `None` =
    /// `kubernetesexecution:<namespace>`, so authorization rules can grant per namespace what
    /// Kubernetes RBAC lets someone create there.
    pub identity: Option<String>,
    /// The approver of approvals given by annotation; `None` =
    /// `kubernetesexecution-approver:<namespace>`.
    pub approver: Option<String>,
    /// Watch only this namespace; `None` = all.
    pub namespace: Option<String>,
}

/// Starts the controller on `engine`, reading and writing `KubernetesExecution`s with
/// `client`. Runs until the engine shuts down.
pub fn start(engine: Engine, client: kube::Client, config: ControllerConfig) {
    let api: Api<KubernetesExecution> = match &config.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let (triggers, hints) = mpsc::channel(TRIGGER_CAPACITY);
    let closing = engine.closing();
    let ctx = Arc::new(reconcile::Context {
        engine,
        client,
        config,
        followed: Arc::new(Mutex::new(HashSet::new())),
        triggers,
    });
    let controller = Controller::new(api, watcher::Config::default())
        .with_config(kube::runtime::controller::Config::default().concurrency(CONCURRENCY))
        .reconcile_on(ReceiverStream::new(hints))
        .graceful_shutdown_on(async move { closing.cancelled().await })
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "KubernetesExecution controller");
            }
        });
    tokio::spawn(controller);
    tracing::info!("reconciling KubernetesExecutions");
}
