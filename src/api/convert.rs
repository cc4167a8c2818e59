//! proto ↔ domain conversions. Field errors name the proto field.

use std::time::Duration;

use prost_types::{value::Kind, ListValue, Struct, Timestamp};
use serde_json::{Map, Number, Value};

use super::proto;
use crate::{
    domain::{
        ActionSpec, AlertContext, Event, ExecutionRequest, ExecutionState, ExecutionView,
        ParamType, Recommendation, RequestedTarget, Risk, Target,
    },
    engine::{DryRunReport, EngineError},
};

pub fn struct_to_json(s: Struct) -> Map<String, Value> {
    s.fields
        .into_iter()
        .map(|(k, v)| (k, value_to_json(v)))
        .collect()
}

pub fn value_to_json(v: prost_types::Value) -> Value {
    match v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(b),
        Some(Kind::NumberValue(n)) => {
            if n.fract() == 0.0 && n.abs() < 9.0e15 {
                Value::Number(Number::from(n as i64))
            } else {
                Number::from_f64(n)
                    .map(Value::Number)
                    .unwrap_or(Value::Null)
            }
        }
        Some(Kind::StringValue(s)) => Value::String(s),
        Some(Kind::ListValue(l)) => Value::Array(l.values.into_iter().map(value_to_json).collect()),
        Some(Kind::StructValue(s)) => Value::Object(struct_to_json(s)),
    }
}

pub fn json_to_value(v: &Value) -> prost_types::Value {
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(a) => Kind::ListValue(ListValue {
            values: a.iter().map(json_to_value).collect(),
        }),
        Value::Object(o) => Kind::StructValue(json_to_struct(o)),
    };
    prost_types::Value { kind: Some(kind) }
}

pub fn json_to_struct(m: &Map<String, Value>) -> Struct {
    Struct {
        fields: m
            .iter()
            .map(|(k, v)| (k.clone(), json_to_value(v)))
            .collect(),
    }
}

/// A JSON value as a Struct; non-objects are wrapped as `{"value": …}`, null is absent.
fn json_to_opt_struct(v: &Value) -> Option<Struct> {
    match v {
        Value::Null => None,
        Value::Object(o) => Some(json_to_struct(o)),
        other => Some(json_to_struct(&Map::from_iter([(
            "value".to_string(),
            other.clone(),
        )]))),
    }
}

fn timestamp(t: chrono::DateTime<chrono::Utc>) -> Timestamp {
    Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

fn timeout_from(d: Option<prost_types::Duration>) -> Result<Option<Duration>, EngineError> {
    match d {
        None => Ok(None),
        Some(d) if d.seconds < 0 || d.nanos < 0 => {
            Err(EngineError::invalid("timeout", "must not be negative"))
        }
        Some(d) => Ok(Some(Duration::new(d.seconds as u64, d.nanos as u32))),
    }
}

fn target_from(t: Option<proto::Target>) -> RequestedTarget {
    let t = t.unwrap_or_default();
    RequestedTarget {
        cluster: t.cluster.trim().to_string(),
        namespace: t.namespace.trim().to_string(),
        kind: t.kind.trim().to_string(),
        name: t.name.trim().to_string(),
    }
}

fn alert_from(a: Option<proto::AlertContext>) -> Option<AlertContext> {
    a.map(|a| AlertContext {
        name: a.name,
        severity: a.severity,
        labels: a.labels.into_iter().collect(),
        annotations: a.annotations.into_iter().collect(),
    })
}

fn alert_to(a: &AlertContext) -> proto::AlertContext {
    proto::AlertContext {
        name: a.name.clone(),
        severity: a.severity.clone(),
        labels: a.labels.clone().into_iter().collect(),
        annotations: a.annotations.clone().into_iter().collect(),
    }
}

pub fn execute_request(r: proto::ExecuteRequest) -> Result<ExecutionRequest, EngineError> {
    Ok(ExecutionRequest {
        action: r.action.trim().to_string(),
        target: target_from(r.target),
        parameters: r.parameters.map(struct_to_json).unwrap_or_default(),
        request_id: r.request_id,
        timeout: timeout_from(r.timeout)?,
        alert: alert_from(r.alert),
        rollback_on_failure: r.rollback_on_failure,
        priority: r.priority,
        recommendation: r.recommendation.map(|r| Recommendation {
            incident_id: r.incident_id,
            confidence: r.confidence,
            reasoning: r.reasoning,
            source: r.source,
        }),
        ..Default::default()
    })
}

fn recommendation_to(r: &Recommendation) -> proto::Recommendation {
    proto::Recommendation {
        incident_id: r.incident_id.clone(),
        confidence: r.confidence,
        reasoning: r.reasoning.clone(),
        source: r.source.clone(),
    }
}

pub fn dry_run_request(r: proto::DryRunRequest) -> ExecutionRequest {
    ExecutionRequest {
        action: r.action.trim().to_string(),
        target: target_from(r.target),
        parameters: r.parameters.map(struct_to_json).unwrap_or_default(),
        alert: alert_from(r.alert),
        ..Default::default()
    }
}

pub fn target_to(t: &Target) -> proto::Target {
    proto::Target {
        cluster: t.cluster.clone(),
        namespace: t.namespace.clone(),
        kind: t.kind.clone(),
        name: t.name.clone(),
    }
}

pub fn state_to(s: ExecutionState) -> proto::ExecutionState {
    use proto::ExecutionState as P;
    match s {
        ExecutionState::Queued => P::Queued,
        ExecutionState::Running => P::Running,
        ExecutionState::Succeeded => P::Succeeded,
        ExecutionState::Failed => P::Failed,
        ExecutionState::Cancelled => P::Cancelled,
        ExecutionState::TimedOut => P::TimedOut,
        ExecutionState::WaitingApproval => P::WaitingApproval,
        ExecutionState::RollingBack => P::RollingBack,
        ExecutionState::RolledBack => P::RolledBack,
        ExecutionState::Interrupted => P::Interrupted,
        ExecutionState::Rejected => P::Rejected,
        ExecutionState::Shadowed => P::Shadowed,
    }
}

/// `None` for UNSPECIFIED (no filter).
pub fn state_from(raw: i32) -> Result<Option<ExecutionState>, EngineError> {
    use proto::ExecutionState as P;
    let state = P::try_from(raw)
        .map_err(|_| EngineError::invalid("state", format!("unknown state {raw}")))?;
    Ok(match state {
        P::Unspecified => None,
        P::Queued => Some(ExecutionState::Queued),
        P::Running => Some(ExecutionState::Running),
        P::Succeeded => Some(ExecutionState::Succeeded),
        P::Failed => Some(ExecutionState::Failed),
        P::Cancelled => Some(ExecutionState::Cancelled),
        P::TimedOut => Some(ExecutionState::TimedOut),
        P::WaitingApproval => Some(ExecutionState::WaitingApproval),
        P::RollingBack => Some(ExecutionState::RollingBack),
        P::RolledBack => Some(ExecutionState::RolledBack),
        P::Interrupted => Some(ExecutionState::Interrupted),
        P::Rejected => Some(ExecutionState::Rejected),
        P::Shadowed => Some(ExecutionState::Shadowed),
    })
}

pub fn execution_to(v: &ExecutionView) -> proto::Execution {
    proto::Execution {
        id: v.id.clone(),
        action: v.action.clone(),
        target: Some(target_to(&v.target)),
        parameters: Some(json_to_struct(&v.parameters)),
        request_id: v.request_id.clone(),
        state: state_to(v.state) as i32,
        message: v.message.clone(),
        created_at: Some(timestamp(v.created_at)),
        started_at: v.started_at.map(timestamp),
        finished_at: v.finished_at.map(timestamp),
        timeout: Some(duration(v.timeout)),
        alert: v.alert.as_ref().map(alert_to),
        recommendation: v.recommendation.as_ref().map(recommendation_to),
        result: json_to_opt_struct(&v.result),
        requester: v.requester.clone(),
        policy: policy_from_json(&v.policy),
        approval: approval_from_json(&v.approval),
        trace_id: v.trace_id.clone(),
        rollback_data: json_to_opt_struct(&v.rollback_data),
        last_sequence: v.last_sequence,
    }
}

/// The recorded decision (`{"decision", "reasons"}`) as proto; absent when none was made.
fn policy_from_json(v: &Value) -> Option<proto::PolicyDecision> {
    let decision = v.get("decision")?.as_str()?.to_string();
    let reasons = v
        .get("reasons")
        .and_then(Value::as_array)
        .map(|r| {
            r.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    Some(proto::PolicyDecision { decision, reasons })
}

fn approval_from_json(v: &Value) -> Option<proto::Approval> {
    let approved = v.get("approved")?.as_bool()?;
    let text = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let decided_at = v
        .get("at")
        .and_then(Value::as_str)
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| timestamp(t.with_timezone(&chrono::Utc)));
    Some(proto::Approval {
        approved,
        approver: text("approver"),
        reason: text("reason"),
        decided_at,
    })
}

pub fn event_to(execution_id: &str, e: &Event) -> proto::ExecutionEvent {
    proto::ExecutionEvent {
        execution_id: execution_id.to_string(),
        sequence: e.sequence,
        timestamp: Some(timestamp(e.timestamp)),
        state: state_to(e.state) as i32,
        message: e.message.clone(),
        progress: e
            .progress
            .map(|(current, total)| proto::Progress { current, total }),
        details: json_to_opt_struct(&e.details),
    }
}

pub fn dry_run_to(r: &DryRunReport) -> proto::DryRunResponse {
    proto::DryRunResponse {
        target: Some(target_to(&r.target)),
        parameters: Some(json_to_struct(&r.parameters)),
        summary: r.plan.summary.clone(),
        changes: r
            .plan
            .changes
            .iter()
            .map(|c| proto::PlannedChange {
                object: c.object.clone(),
                summary: c.summary.clone(),
                before: Some(json_to_value(&c.before)),
                after: Some(json_to_value(&c.after)),
                patch: Some(json_to_value(&c.patch())),
            })
            .collect(),
        warnings: r.plan.warnings.clone(),
        policy: r.policy.as_ref().map(|d| proto::PolicyDecision {
            decision: d.verdict().to_string(),
            reasons: d.reasons.clone(),
        }),
    }
}

pub fn action_to(spec: &ActionSpec) -> proto::ActionDescriptor {
    proto::ActionDescriptor {
        name: spec.name.to_string(),
        description: spec.description.to_string(),
        risk: match spec.risk {
            Risk::Low => proto::RiskLevel::Low,
            Risk::Medium => proto::RiskLevel::Medium,
            Risk::High => proto::RiskLevel::High,
        } as i32,
        target_kinds: spec.target_kinds.iter().map(|k| k.to_string()).collect(),
        parameters: spec
            .params
            .iter()
            .map(|p| proto::ParameterDescriptor {
                name: p.name.to_string(),
                r#type: match p.ty {
                    ParamType::Integer => proto::ParameterType::Integer,
                    ParamType::String => proto::ParameterType::String,
                    ParamType::Boolean => proto::ParameterType::Boolean,
                    ParamType::Quantity => proto::ParameterType::Quantity,
                    ParamType::Files => proto::ParameterType::Files,
                } as i32,
                description: p.description.to_string(),
                required: p.required,
                default_value: p.default.as_ref().map(json_to_value),
                minimum: p.min,
                maximum: p.max,
                allowed_values: p.allowed.iter().map(|v| v.to_string()).collect(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_numbers_become_integers_when_integral() {
        let s = json_to_struct(
            serde_json::json!({"replicas": 5, "ratio": 0.5})
                .as_object()
                .unwrap(),
        );
        let back = struct_to_json(s);
        assert_eq!(back["replicas"], serde_json::json!(5));
        assert_eq!(back["ratio"], serde_json::json!(0.5));
    }
}
