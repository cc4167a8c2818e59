//! The `KubernetesExecution` custom resource: what a workflow controller writes (`spec`) and
//! what this door writes back (`status`). The CRD in `deploy/` is generated from these types
//! (`executor-service manifests crd`), so the two never drift.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The API group of the resource, also the prefix of its annotations and finalizer.
pub const GROUP: &str = "executor-service.io";
/// Annotation whose value names the approver: `kubectl annotate kex NAME
/// executor-service.io/approve=alice` approves an execution waiting for approval.
pub const APPROVE_ANNOTATION: &str = "executor-service.io/approve";
/// Annotation whose value names who rejects an execution waiting for approval.
pub const REJECT_ANNOTATION: &str = "executor-service.io/reject";
/// Annotation with the reason given with an approval or a rejection (optional).
pub const REASON_ANNOTATION: &str = "executor-service.io/reason";
/// Held while an execution may still run, so deleting the object cancels it first.
pub const FINALIZER: &str = "executor-service.io/cancel-on-delete";

/// An execution of one remediation action, asked for through the Kubernetes API.
///
/// The spec is read once, when the execution is accepted; later changes are refused in the
/// status (condition `SpecChangeRefused`), never applied. Deleting the object cancels an
/// execution that is still running; its history stays in the executor's store.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, JsonSchema)]
#[kube(
    group = "executor-service.io",
    version = "v1alpha1",
    kind = "KubernetesExecution",
    plural = "kubernetesexecutions",
    shortname = "kex",
    category = "executor",
    namespaced,
    status = "KubernetesExecutionStatus",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Action","type":"string","jsonPath":".spec.action"}"#,
    printcolumn = r#"{"name":"Kind","type":"string","jsonPath":".spec.target.kind","priority":1}"#,
    printcolumn = r#"{"name":"Target","type":"string","jsonPath":".spec.target.name"}"#,
    printcolumn = r#"{"name":"Execution","type":"string","jsonPath":".status.executionId","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct KubernetesExecutionSpec {
    /// The action's name, as `ListActions` lists it (`scale_deployment`, `restart_pod`, …).
    pub action: String,
    /// The object the action works on.
    pub target: ExecutionTarget,
    /// The action's parameters, typed as `ListActions` describes them.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    #[schemars(schema_with = "free_form_object")]
    pub parameters: Map<String, Value>,
    /// Only plan: the status gets the diff, and nothing in the cluster changes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    /// Seconds before the execution times out; the executor's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub timeout_seconds: Option<u32>,
    /// Restore the recorded pre-state when verification fails; true when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_on_failure: Option<bool>,
    /// Who asked, and why: kept with the execution for the audit trail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<RequestMetadata>,
}

/// The object an action works on.
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionTarget {
    /// The kubeconfig context of another cluster; the executor's default cluster when absent.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cluster: String,
    /// The target's namespace; this object's namespace when absent (cluster-scoped kinds
    /// such as Node take none).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// `Deployment`, `Pod`, `Node`, … (`ListActions` says which an action takes).
    pub kind: String,
    pub name: String,
}

/// The incident and alert behind a request.
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequestMetadata {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub incident: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<AlertMetadata>,
    /// Why the action was proposed, as the recommending system said it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reasoning: String,
    /// Who recommended it (a system or a person).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
}

/// The alert that fired.
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertMetadata {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub severity: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// What the executor's controller observed and did. Written only by the controller.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KubernetesExecutionStatus {
    /// `Pending`, `WaitingApproval`, `Running`, `RollingBack`, then one of `Succeeded`,
    /// `Failed`, `Cancelled`, `TimedOut`, `RolledBack`, `Interrupted`, `Rejected`: the
    /// execution's state; `Rejected` also when the spec is invalid or the policy denies it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// `Accepted`, `Approved`, `Succeeded`, `SpecChangeRefused`, `DryRun`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The execution in the executor's history (`GetExecution`, `WatchExecution`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_id: Option<String>,
    /// The generation the execution was accepted for; later generations are not applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted_generation: Option<i64>,
    /// The last generation this status looked at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Who the executor recorded as the requester.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<String>,
    /// The execution's last message (or why it was rejected).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The last step the execution reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_progress: Option<Progress>,
    /// What the action reports when it ends (the plan and diff of a dry run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form")]
    pub result: Option<Value>,
    /// The pre-state recorded to undo the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form")]
    pub rollback_data: Option<Value>,
    /// Who approved or rejected, when and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form")]
    pub approval: Option<Value>,
}

/// One step of an execution.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    pub sequence: u64,
    pub time: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
}

/// A condition as Kubernetes objects carry them.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    pub reason: String,
    #[serde(default)]
    pub message: String,
    pub last_transition_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

fn free_form(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "x-kubernetes-preserve-unknown-fields": true })
}

fn free_form_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "type": "object", "x-kubernetes-preserve-unknown-fields": true })
}

/// The CRD as YAML, as `deploy/kubernetesexecution-crd.yaml` holds it.
pub fn crd_yaml() -> String {
    use kube::CustomResourceExt;
    let header = "# Generated by `executor-service manifests crd` from src/controller/resource.rs; do not edit.\n";
    format!(
        "{header}{}",
        serde_yaml::to_string(&KubernetesExecution::crd()).unwrap_or_default()
    )
}
