//! The status this door writes: an execution's view mirrored into a `KubernetesExecution`'s
//! status, and the conditions Kubernetes tooling reads (`kubectl wait --for condition=…`).

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;

use super::resource::{Condition, KubernetesExecutionStatus, Progress};
use crate::domain::{Event, ExecutionState, ExecutionView};
use crate::engine::EngineError;

pub const ACCEPTED: &str = "Accepted";
pub const APPROVED: &str = "Approved";
pub const SUCCEEDED: &str = "Succeeded";
pub const SPEC_CHANGE_REFUSED: &str = "SpecChangeRefused";
pub const DRY_RUN: &str = "DryRun";

/// The phase shown for an execution state (`kubectl get kex` prints it).
pub fn phase(state: ExecutionState) -> &'static str {
    match state {
        ExecutionState::Queued => "Pending",
        ExecutionState::Running => "Running",
        ExecutionState::Succeeded => "Succeeded",
        ExecutionState::Failed => "Failed",
        ExecutionState::Cancelled => "Cancelled",
        ExecutionState::TimedOut => "TimedOut",
        ExecutionState::WaitingApproval => "WaitingApproval",
        ExecutionState::RollingBack => "RollingBack",
        ExecutionState::RolledBack => "RolledBack",
        ExecutionState::Interrupted => "Interrupted",
        ExecutionState::Rejected => "Rejected",
        ExecutionState::Shadowed => "Shadowed",
    }
}

/// Whether the phase is one no execution will leave.
pub fn is_final(phase: Option<&str>) -> bool {
    matches!(
        phase,
        Some(
            "Succeeded"
                | "Failed"
                | "Cancelled"
                | "TimedOut"
                | "RolledBack"
                | "Interrupted"
                | "Rejected"
                | "Shadowed"
        )
    )
}

pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Sets condition `type_`, keeping its transition time when its status did not change.
pub fn set_condition(
    status: &mut KubernetesExecutionStatus,
    type_: &str,
    value: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
) {
    let value = if value { "True" } else { "False" };
    let message = message.into();
    let now = timestamp(Utc::now());
    match status.conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != value {
                c.last_transition_time = now;
            }
            c.status = value.to_string();
            c.reason = reason.to_string();
            c.message = message;
            c.observed_generation = generation;
        }
        None => status.conditions.push(Condition {
            type_: type_.to_string(),
            status: value.to_string(),
            reason: reason.to_string(),
            message,
            last_transition_time: now,
            observed_generation: generation,
        }),
    }
}

/// `status` brought up to the execution `view` and its last event.
pub fn mirror(
    mut status: KubernetesExecutionStatus,
    view: &ExecutionView,
    last: Option<&Event>,
    generation: Option<i64>,
) -> KubernetesExecutionStatus {
    status.phase = Some(phase(view.state).to_string());
    status.execution_id = Some(view.id.clone());
    status.requester = Some(view.requester.clone());
    status.start_time = view.started_at.map(timestamp);
    status.completion_time = view.finished_at.map(timestamp);
    status.message = (!view.message.is_empty()).then(|| view.message.clone());
    let present = |v: &Value| (!v.is_null()).then(|| v.clone());
    status.result = present(&view.result);
    status.rollback_data = present(&view.rollback_data);
    status.approval = present(&view.approval);
    if let Some(e) = last {
        status.last_progress = Some(Progress {
            sequence: e.sequence,
            time: timestamp(e.timestamp),
            message: e.message.clone(),
            current: e.progress.map(|p| p.0),
            total: e.progress.map(|p| p.1),
        });
    }
    let accepted = status.accepted_generation;
    // Rejected by the policy at admission; a rejected or expired approval is the `Approved`
    // condition's to tell, the request itself was accepted.
    if view.state == ExecutionState::Rejected && view.policy["decision"] == "deny" {
        set_condition(
            &mut status,
            ACCEPTED,
            false,
            "PolicyDenied",
            view.message.clone(),
            accepted,
        );
    } else {
        set_condition(
            &mut status,
            ACCEPTED,
            true,
            "Accepted",
            format!("execution {}", view.id),
            accepted,
        );
    }
    if let Some(approved) = view.approval.get("approved").and_then(Value::as_bool) {
        let by = view.approval["approver"].as_str().unwrap_or_default();
        let (reason, verb) = if approved {
            ("Approved", "approved")
        } else {
            ("Rejected", "rejected")
        };
        set_condition(
            &mut status,
            APPROVED,
            approved,
            reason,
            format!("{verb} by {by}"),
            accepted,
        );
    } else if view.state == ExecutionState::WaitingApproval {
        set_condition(
            &mut status,
            APPROVED,
            false,
            "WaitingApproval",
            "the policy holds this action for approval: annotate the object with executor-service.io/approve=<approver>",
            accepted,
        );
    }
    if view.state.is_terminal() {
        let ok = view.state == ExecutionState::Succeeded;
        let reason = if ok { "Succeeded" } else { phase(view.state) };
        set_condition(
            &mut status,
            SUCCEEDED,
            ok,
            reason,
            view.message.clone(),
            accepted,
        );
    }
    status.observed_generation = generation;
    status
}

/// The spec's field an engine field name stands for: `parameters.replicas` →
/// `spec.parameters.replicas`, `target.name` → `spec.target.name`, `timeout_seconds` →
/// `spec.timeoutSeconds`. Parameter names stay as written (they are snake_case in the spec).
pub fn spec_field(field: &str) -> String {
    if field.starts_with("parameters") {
        return format!("spec.{field}");
    }
    let camel: Vec<String> = field
        .split('.')
        .map(|segment| {
            let mut out = String::new();
            let mut upper = false;
            for ch in segment.chars() {
                if ch == '_' {
                    upper = true;
                } else if upper {
                    out.extend(ch.to_uppercase());
                    upper = false;
                } else {
                    out.push(ch);
                }
            }
            out
        })
        .collect();
    let joined = camel.join(".");
    match joined.as_str() {
        "timeout" => "spec.timeoutSeconds".into(),
        other => format!("spec.{other}"),
    }
}

/// Why the engine refused a request, as a `Rejected` status's reason and message; `None`
/// for refusals that may pass later (full queue, unavailable store), which are retried.
pub fn refusal(error: &EngineError) -> Option<(&'static str, String)> {
    match error {
        EngineError::InvalidArgument { field, message } => {
            Some(("InvalidSpec", format!("{}: {message}", spec_field(field))))
        }
        EngineError::NotFound(what) => Some(("TargetNotFound", format!("{what} not found"))),
        EngineError::FailedPrecondition(m) => Some(("FailedPrecondition", m.clone())),
        EngineError::PermissionDenied(m) => Some(("Forbidden", m.clone())),
        EngineError::AlreadyExists(m) => Some(("Conflict", m.clone())),
        EngineError::QueueFull { .. }
        | EngineError::Exhausted { .. }
        | EngineError::ShuttingDown
        | EngineError::Unavailable(_)
        | EngineError::Internal(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_fields_become_the_spec_fields_a_user_wrote() {
        assert_eq!(
            spec_field("parameters.replicas"),
            "spec.parameters.replicas"
        );
        assert_eq!(
            spec_field("parameters.max_unavailable"),
            "spec.parameters.max_unavailable"
        );
        assert_eq!(spec_field("target.name"), "spec.target.name");
        assert_eq!(spec_field("action"), "spec.action");
        assert_eq!(spec_field("timeout_seconds"), "spec.timeoutSeconds");
        assert_eq!(spec_field("timeout"), "spec.timeoutSeconds");
        assert_eq!(spec_field("rollback_on_failure"), "spec.rollbackOnFailure");
    }

    #[test]
    fn a_condition_keeps_its_transition_time_until_its_status_changes() {
        let mut status = KubernetesExecutionStatus::default();
        set_condition(&mut status, ACCEPTED, true, "Accepted", "a", Some(1));
        let first = status.conditions[0].last_transition_time.clone();
        status.conditions[0].last_transition_time = "2000-01-01T00:00:00Z".into();
        set_condition(&mut status, ACCEPTED, true, "Accepted", "b", Some(1));
        assert_eq!(
            status.conditions[0].last_transition_time,
            "2000-01-01T00:00:00Z"
        );
        assert_eq!(status.conditions[0].message, "b");
        set_condition(&mut status, ACCEPTED, false, "Gone", "c", Some(1));
        assert_ne!(
            status.conditions[0].last_transition_time,
            "2000-01-01T00:00:00Z"
        );
        assert!(!first.is_empty());
        assert_eq!(status.conditions.len(), 1);
    }
}
