//! The synthetic history that P5 and `bench store` fill through the `Store` trait: 30 days of
//! deterministic, mostly successful executions with ~5 events each.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use executor_service::domain::Target;
use executor_service::domain::{AlertContext, Event, ExecutionState, ExecutionView};
use executor_service::store::{self, Store};
use serde_json::json;

const ACTIONS: [&str; 8] = [
    "scale_deployment",
    "rolling_restart_deployment",
    "restart_pod",
    "rollback_deployment",
    "increase_resources",
    "cordon_node",
    "drain_node",
    "notify_only",
];

/// Deterministic pseudo-random numbers (splitmix64), so two runs store the same history.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Execution `i` of the history: 30 days, newest last; mostly successes.
fn mk_execution(i: usize) -> (ExecutionView, Vec<Event>) {
    let r = mix(i as u64);
    let state = match r % 100 {
        0..=84 => ExecutionState::Succeeded,
        85..=92 => ExecutionState::Failed,
        93..=95 => ExecutionState::TimedOut,
        96..=97 => ExecutionState::Cancelled,
        _ => ExecutionState::RolledBack,
    };
    let created_at = Utc.timestamp_opt(1_760_000_000, 0).unwrap()
        + chrono::Duration::milliseconds(i as i64 * 25_920)
        + chrono::Duration::microseconds((r % 1_000_000) as i64);
    let finished_at = created_at + chrono::Duration::seconds(5 + (r % 90) as i64);
    let ns = format!("team-{}", (r >> 8) % 20);
    let name = format!("svc-{}", (r >> 16) % 300);
    let view = ExecutionView {
        id: format!("{:016x}-{i:08}", r),
        action: ACTIONS[((r >> 24) % ACTIONS.len() as u64) as usize].to_string(),
        target: Target {
            cluster: "prod-eu-1".into(),
            namespace: ns.clone(),
            kind: "Deployment".into(),
            name: name.clone(),
        },
        parameters: json!({"replicas": (r >> 32) % 20, "reason": "p99 latency above SLO"})
            .as_object()
            .cloned()
            .unwrap_or_default(),
        request_id: format!("alertmanager-{i}"),
        alert: Some(AlertContext {
            name: "HighLatency".into(),
            severity: "critical".into(),
            labels: [
                ("team".to_string(), ns.clone()),
                ("service".to_string(), name.clone()),
            ]
            .into(),
            annotations: [(
                "runbook".to_string(),
                "https://runbooks.example.com/latency".to_string(),
            )]
            .into(),
        }),
        timeout: Duration::from_secs(120),
        state,
        message: format!("{} {ns}/deployment/{name}", state.as_str().to_lowercase()),
        created_at,
        started_at: Some(created_at + chrono::Duration::milliseconds(40)),
        finished_at: Some(finished_at),
        result: json!({"before": {"replicas": 3, "ready": 3}, "after": {"replicas": 5, "ready": 5}}),
        rollback_data: json!({"replicas": 3}),
        last_sequence: 5,
        requester: format!("oncall-{}@example.com", (r >> 40) % 10),
        policy: json!({"decision": "allow", "reasons": ["within change budget"]}),
        approval: serde_json::Value::Null,
        trace_id: format!("{:032x}", u128::from(r) << 64 | u128::from(mix(r))),
        recommendation: None,
    };
    let steps = [
        (ExecutionState::Queued, "queued"),
        (ExecutionState::Running, "validated parameters and target"),
        (ExecutionState::Running, "patched spec.replicas 3 -> 5"),
        (
            ExecutionState::Running,
            "waiting for rollout: 4 of 5 updated replicas available",
        ),
        (
            state,
            "verified: deployment \"svc\" successfully rolled out",
        ),
    ];
    let events = steps
        .iter()
        .enumerate()
        .map(|(k, (state, message))| Event {
            sequence: k as u64 + 1,
            timestamp: created_at + chrono::Duration::seconds(k as i64),
            state: *state,
            message: message.to_string(),
            progress: Some((k as u64, 4)),
            details: json!({"observedGeneration": k + 1}),
            encoded: Default::default(),
        })
        .collect();
    (view, events)
}

/// Inserts executions `0..n` with their events through the Store trait from `writers` tasks;
/// returns how long it took.
pub(crate) async fn fill(
    store: Arc<dyn Store>,
    n: usize,
    writers: usize,
) -> Result<Duration, store::StoreError> {
    let writers = writers.max(1);
    let start = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in (w..n).step_by(writers) {
                    let (view, events) = mk_execution(i);
                    store.insert(&view, "fingerprint").await?;
                    store.append_events(&view.id, &events).await?;
                }
                Ok::<_, store::StoreError>(())
            })
        })
        .collect();
    for task in tasks {
        task.await
            .map_err(|e| store::StoreError::Backend(e.to_string()))??;
    }
    Ok(start.elapsed())
}
