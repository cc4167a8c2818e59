//! Remediation actions: one file per action behind the [`Remediation`] trait (a folder for
//! `drain_node`, whose kubectl filter chain and evictions are files of their own); this module
//! is the registry and the vocabulary they share (descriptors, targets, progress, errors).
//!
//! Shared by several actions: `params` (typed parameter validation), `plan` ([`Plan`] and
//! [`Change`]), `workload` (reading a workload, following its rollout, restoring a template),
//! `scaling` and `restarting` (one implementation for each workload kind).
//!
//! An action never talks gRPC and never touches the engine's bookkeeping: it reads and changes
//! the cluster through [`ActionContext`] and reports what it does through [`Reporter`].

pub mod access;
mod audit_logs;
mod backup_data;
mod cleanup_storage;
mod code;
mod collect_diagnostics;
mod compact_storage;
mod cordon_node;
mod create_heap_dump;
mod db_job;
mod debug_mode;
mod delete_pod;
mod drain_node;
mod expand_pvc;
mod failover_database;
mod generic;
mod increase_resources;
mod job_run;
mod migrate_workload;
mod notify_only;
mod optimize_resources;
mod params;
mod plan;
mod quarantine_pod;
mod repair_database;
mod reset_service_mesh;
mod restart_daemonset;
mod restart_network;
mod restart_pod;
mod restart_set;
mod restart_statefulset;
mod restarting;
mod rollback_deployment;
mod rolling_restart_deployment;
mod rotate_secrets;
mod run_job;
mod scale_deployment;
mod scale_statefulset;
mod scaling;
mod taint_node;
mod uncordon_node;
mod untaint_node;
mod update_hpa;
mod update_network_policy;
mod workload;

use std::{collections::BTreeMap, sync::Arc};

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

pub use crate::domain::{Access, ActionSpec, ParamSpec, ParamType, Risk, Target};
pub use debug_mode::{ended_debug_modes, EndedDebugMode};
pub(crate) use params::check_object_name;
pub use params::{parse_quantity, validate_parameters};
pub use plan::{Change, Plan};
pub use scaling::MAX_REPLICAS;

use crate::cluster::{ClusterError, RolloutError};

/// One step of progress an action reports while it runs.
#[derive(Debug, Clone, Default)]
pub struct Update {
    pub message: String,
    /// `(current, total)` where a count is meaningful (pods updated, pods evicted).
    pub progress: Option<(u64, u64)>,
    pub details: Value,
}

impl Update {
    pub fn new(message: impl Into<String>) -> Self {
        Update {
            message: message.into(),
            progress: None,
            details: Value::Null,
        }
    }
    pub fn progress(mut self, current: u64, total: u64) -> Self {
        self.progress = Some((current, total));
        self
    }
    pub fn details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }
}

/// Where an action sends its progress and the pre-state it needs to be undone. The engine
/// supplies the sink; each call is recorded as an event before it returns.
#[derive(Clone)]
pub struct Reporter {
    sink: Arc<dyn Fn(Report) + Send + Sync>,
}

/// What a [`Reporter`] carries to the engine.
pub enum Report {
    Progress(Update),
    /// The pre-state of the objects the action is about to change.
    RollbackData(Value),
}

impl Reporter {
    pub fn new(sink: impl Fn(Report) + Send + Sync + 'static) -> Self {
        Reporter {
            sink: Arc::new(sink),
        }
    }
    /// A reporter that drops everything (dry runs, tests).
    pub fn discard() -> Self {
        Reporter::new(|_| {})
    }
    pub fn progress(&self, update: Update) {
        (self.sink)(Report::Progress(update))
    }
    pub fn rollback_data(&self, data: Value) {
        (self.sink)(Report::RollbackData(data))
    }
}

/// Everything an action needs for one run.
#[derive(Clone)]
pub struct ActionContext {
    pub client: kube::Client,
    pub target: Target,
    /// Validated parameters with defaults applied (see [`validate_parameters`]).
    pub params: Map<String, Value>,
    pub reporter: Reporter,
}

impl ActionContext {
    /// The validated parameters as the action's typed struct.
    ///
    /// # Errors
    /// Only if the action's struct disagrees with its own [`ActionSpec`]: a programming error,
    /// reported as [`ActionError::Internal`].
    pub fn params<T: DeserializeOwned>(&self) -> Result<T, ActionError> {
        serde_json::from_value(Value::Object(self.params.clone()))
            .map_err(|e| ActionError::Internal(format!("parameters do not fit the action: {e}")))
    }
}

/// How a successful run ended.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub message: String,
    /// Structured result shown on the execution (e.g. the replacement pod).
    pub result: Value,
}

/// Why an action could not be planned or run.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// A parameter is ill-typed, out of bounds, or inconsistent with the cluster's state.
    #[error("{field}: {message}")]
    InvalidParameter { field: String, message: String },
    /// The target (or an object it needs) does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The cluster's state forbids the action (e.g. an unmanaged pod without `force`).
    #[error("{0}")]
    Precondition(String),
    /// The rollout the action started did not complete: a failed verification, which the
    /// engine answers by restoring the recorded pre-state.
    #[error(transparent)]
    Rollout(RolloutError),
    /// The target can no longer be followed: it was deleted, or the API server answers 403 or
    /// 404 for it. Not a failed verification: there is nothing to restore, or no way to see
    /// the restore, so the execution fails at once with this message.
    #[error(transparent)]
    TargetLost(RolloutError),
    /// A Kubernetes API call failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The cluster could not be reached or named.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// A bug: the action and its descriptor disagree.
    #[error("internal: {0}")]
    Internal(String),
}

impl From<RolloutError> for ActionError {
    /// Sorts what stopped a rollout: the errors no wait heals are [`ActionError::TargetLost`],
    /// the rest [`ActionError::Rollout`].
    fn from(err: RolloutError) -> Self {
        if err.is_permanent() {
            ActionError::TargetLost(err)
        } else {
            ActionError::Rollout(err)
        }
    }
}

impl ActionError {
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        ActionError::InvalidParameter {
            field: format!("parameters.{field}"),
            message: message.into(),
        }
    }

    /// Maps a 404 from the API server to [`ActionError::NotFound`] naming `what`.
    pub fn from_kube(err: kube::Error, what: &str) -> Self {
        match &err {
            kube::Error::Api(status) if status.code == 404 => ActionError::NotFound(what.into()),
            _ => ActionError::Kube(err),
        }
    }
}

/// One remediation action. Each implementation lives in its own file with its typed parameters.
#[async_trait]
pub trait Remediation: Send + Sync + 'static {
    fn spec(&self) -> &ActionSpec;

    /// Checks rules that span several parameters (called after [`validate_parameters`]).
    ///
    /// # Errors
    /// [`ActionError::InvalidParameter`] naming the parameter.
    fn validate(&self, _params: &Map<String, Value>) -> Result<(), ActionError> {
        Ok(())
    }

    /// What the action would change, from the cluster's current state; mutates nothing.
    async fn plan(&self, ctx: &ActionContext) -> Result<Plan, ActionError>;

    /// Does the work, reporting progress, until done or failed. Dropping the future stops it.
    /// Before its first mutation it reports the pre-state (`Reporter::rollback_data`).
    async fn execute(&self, ctx: &ActionContext) -> Result<Outcome, ActionError>;

    /// Whether the action only reads (no cooldown, allowed in protected namespaces).
    fn read_only(&self) -> bool {
        false
    }

    /// Whether the target rests for the cooldown after this action. Changes that end on a
    /// schedule (debug mode) must not hold their own revert back.
    fn cools_down(&self) -> bool {
        !self.read_only()
    }

    /// Whether [`Remediation::rollback`] can restore the pre-state `execute` recorded.
    fn can_roll_back(&self) -> bool {
        false
    }

    /// Restores the pre-state recorded by `execute` (its rollback data) and follows the
    /// rollout that starts; called by the engine when verification fails.
    ///
    /// # Errors
    /// [`ActionError::Precondition`] for actions that cannot be undone.
    async fn rollback(&self, _ctx: &ActionContext, _data: &Value) -> Result<Outcome, ActionError> {
        Err(ActionError::Precondition(format!(
            "{} cannot be rolled back",
            self.spec().name
        )))
    }
}

/// All actions by name.
#[derive(Clone)]
pub struct Registry {
    actions: Arc<BTreeMap<&'static str, Arc<dyn Remediation>>>,
}

impl Registry {
    /// The built-in catalog.
    pub fn builtin() -> Self {
        let list: Vec<Arc<dyn Remediation>> = vec![
            Arc::new(restart_pod::RestartPod::new()),
            Arc::new(scale_deployment::action()),
            Arc::new(scale_statefulset::action()),
            Arc::new(rolling_restart_deployment::action()),
            Arc::new(restart_statefulset::action()),
            Arc::new(restart_daemonset::action()),
            Arc::new(rollback_deployment::RollbackDeployment::new()),
            Arc::new(increase_resources::IncreaseResources::new()),
            Arc::new(expand_pvc::ExpandPvc::new()),
            Arc::new(update_hpa::UpdateHpa::new()),
            Arc::new(quarantine_pod::QuarantinePod::new()),
            Arc::new(collect_diagnostics::CollectDiagnostics::new()),
            Arc::new(notify_only::NotifyOnly::new()),
            Arc::new(delete_pod::DeletePod::new()),
            Arc::new(cordon_node::CordonNode::new()),
            Arc::new(uncordon_node::UncordonNode::new()),
            Arc::new(taint_node::TaintNode::new()),
            Arc::new(untaint_node::UntaintNode::new()),
            Arc::new(drain_node::DrainNode::new()),
            Arc::new(migrate_workload::MigrateWorkload::new()),
            Arc::new(update_network_policy::UpdateNetworkPolicy::new()),
            Arc::new(rotate_secrets::RotateSecrets::new()),
            Arc::new(restart_network::RestartNetwork::new()),
            Arc::new(reset_service_mesh::ResetServiceMesh::new()),
            Arc::new(audit_logs::AuditLogs::new()),
            Arc::new(cleanup_storage::CleanupStorage::new()),
            Arc::new(repair_database::RepairDatabase::new()),
            Arc::new(compact_storage::CompactStorage::new()),
            Arc::new(failover_database::FailoverDatabase::new()),
            Arc::new(backup_data::BackupData::new()),
            Arc::new(optimize_resources::OptimizeResources::new()),
            Arc::new(create_heap_dump::CreateHeapDump::new()),
            Arc::new(generic::apply_manifest::ApplyManifest::new()),
            Arc::new(generic::delete_resource::DeleteResource::new()),
            Arc::new(generic::patch_resource::PatchResource::new()),
            Arc::new(run_job::RunJob::new()),
            Arc::new(debug_mode::enable::EnableDebugMode::new()),
            Arc::new(debug_mode::disable::DisableDebugMode::new()),
            Arc::new(code::deploy::DeployCode::new()),
            Arc::new(code::stop::StopCode::new()),
            Arc::new(code::remove::RemoveCode::new()),
            Arc::new(code::status::CodeStatus::new()),
            Arc::new(code::tail::CodeLogs::new()),
        ];
        Registry {
            actions: Arc::new(list.into_iter().map(|a| (a.spec().name, a)).collect()),
        }
    }

    pub fn get(&self, name: &str) -> Option<Arc<dyn Remediation>> {
        self.actions.get(name).cloned()
    }

    /// Specs sorted by name.
    pub fn specs(&self) -> Vec<ActionSpec> {
        self.actions.values().map(|a| a.spec().clone()).collect()
    }
}

/// The field manager of the executor's own writes.
pub(crate) const FIELD_MANAGER: &str = "executor-service";

/// Patch parameters under `manager`; a server-side dry run (`dryRun=All`) when `dry_run`.
pub(super) fn patch_params_as(manager: &str, dry_run: bool) -> kube::api::PatchParams {
    let params = kube::api::PatchParams {
        field_manager: Some(manager.into()),
        ..Default::default()
    };
    if dry_run {
        params.dry_run()
    } else {
        params
    }
}

/// Patch parameters of the executor's own writes ([`FIELD_MANAGER`]).
pub(super) fn executor_patch(dry_run: bool) -> kube::api::PatchParams {
    patch_params_as(FIELD_MANAGER, dry_run)
}

impl ActionContext {
    /// Runs a Kubernetes call, retrying transient failures (429, 5xx, 409, connection errors)
    /// with exponential backoff; each retry is reported as a progress event.
    ///
    /// # Errors
    /// The last error when it is not transient or the attempts are used up.
    pub async fn retry<T, F, Fut>(&self, what: &str, call: F) -> Result<T, kube::Error>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, kube::Error>>,
    {
        crate::cluster::with_retries(
            what,
            |message| self.reporter.progress(Update::new(message)),
            call,
        )
        .await
    }

    /// Deployments in the target's namespace.
    pub fn deployments(&self) -> kube::Api<k8s_openapi::api::apps::v1::Deployment> {
        kube::Api::namespaced(self.client.clone(), &self.target.namespace)
    }

    /// Pods in the target's namespace.
    pub fn pods(&self) -> kube::Api<k8s_openapi::api::core::v1::Pod> {
        kube::Api::namespaced(self.client.clone(), &self.target.namespace)
    }

    /// The target, read from its namespace as a `K` (the type says which API to ask).
    ///
    /// # Errors
    /// [`ActionError::NotFound`] naming the target (`pod prod/pod/web-1`) on a 404; other API
    /// errors, once transient ones have been retried ([`ActionContext::retry`]).
    pub async fn get_target<K>(&self) -> Result<K, ActionError>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        let api = kube::Api::<K>::namespaced(self.client.clone(), &self.target.namespace);
        let what = format!(
            "{} {}",
            K::kind(&()).to_lowercase(),
            self.target.object_ref()
        );
        self.retry(&format!("read {what}"), || api.get(&self.target.name))
            .await
            .map_err(|e| ActionError::from_kube(e, &what))
    }
}

/// The Kubernetes user `action` runs as under its own identity: its ServiceAccount
/// `action-<name with dashes>` in `namespace`, as `deploy/rbac-actions.yaml` creates it.
pub fn service_account_user(namespace: &str, action: &str) -> String {
    format!(
        "system:serviceaccount:{namespace}:{}",
        access::service_account(action)
    )
}
