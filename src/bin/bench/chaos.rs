//! The fault run (R2): a mixed load of executions on many targets while the simulated API
//! server fails a fifth of all requests on every verb, watches included, then the verdict —
//! drawn from each execution's own event stream and from the cluster's record of writes, not
//! from what the executor says about itself.
//!
//! Used by the benchmark's R2 (`r2_faults`), which its CI test (`tests/reliability_faults.rs`)
//! runs with 40 executions: one workload and one set of rules, whatever the size.
//! It uses only the library's public API, the generated client and the simulated cluster.
//!
//! What is judged, per execution:
//! - **stuck**: no terminal event within its timeout (twice that when it rolled back) plus
//!   [`GRACE`], counted from its RUNNING event;
//! - **lost events**: the live WatchExecution stream is not sequences `1..=last` with the
//!   terminal event last, or differs from GetExecution's events;
//! - **overlaps**: on one object, two executions' RUNNING → terminal windows overlap, or a
//!   write (dry runs aside) falls outside every window of the executions on that object;
//! - **changes**: a SUCCEEDED one's write is in the record, and the next execution on the
//!   object finds the state it left (its recorded pre-state), and so does the final read-back
//!   with faults off; one that did not succeed either wrote nothing or says in its events
//!   what it wrote.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use executor_service::api::proto::{
    self, executor_service_client::ExecutorServiceClient, ExecutionState,
};
use executor_service::sim::{self, FaultRule, Write};
use futures::StreamExt;
use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Node, Pod},
};
use kube::{api::ListParams, Api, ResourceExt};
use serde_json::{json, Value};
use tokio::time::Instant;
use tonic::{transport::Channel, Code};

/// Namespace of every namespaced target.
pub const NS: &str = "chaos";
/// Share of API requests answered with an error.
pub const ERROR_SHARE: f64 = 0.2;
/// The injected errors, one rule each: the transient answers a client must ride out (403 and
/// 404 end an execution at once by design, so they would test nothing here).
pub const ERROR_CODES: [u16; 4] = [503, 429, 409, 500];
/// Added to the same share of requests, errors or not.
pub const FAULT_LATENCY: Duration = Duration::from_millis(50);
/// Each execution's timeout (Execute's `timeout`): far above what an execution takes, so an
/// execution that reaches it is stuck in all but name.
pub const TIMEOUT: Duration = Duration::from_secs(60);
/// Slack past the timeout before an execution counts as stuck: the engine's bookkeeping
/// after the deadline and a busy machine.
pub const GRACE: Duration = Duration::from_secs(10);
/// How long an admitted execution may wait for its target's lock and a worker before it
/// counts as stuck (executions on one object run one after the other).
const WAIT_LIMIT: Duration = Duration::from_secs(600);
/// Attempts at Execute while the cluster's errors refuse it at admission (its dry run reads
/// and writes the cluster), the first included. A real caller retries too; a cordon's
/// admission makes four calls that no one retries (three of them the action's), so 41% of
/// its attempts pass at 20% errors: 20 attempts make a refusal on every one rare (3e-5).
const SUBMIT_ATTEMPTS: u32 = 20;
/// The last attempt of the engine's retries of one call (`cluster::retry::MAX_ATTEMPTS`), as
/// its progress events name it: `(attempt 5 of 5)`.
const LAST_ATTEMPT: u32 = executor_service::cluster::MAX_ATTEMPTS;
/// Replicas of each deployment whose pods `restart_pod` targets, one execution per pod.
const PODS_PER_DEPLOYMENT: usize = 4;
/// Executions per deployment that `scale_deployment` and `rolling_restart_deployment` share:
/// enough of them queue on one object to test that they take turns.
const EXECUTIONS_PER_DEPLOYMENT: usize = 25;
/// Node actions per node (cordon and uncordon take turns).
const EXECUTIONS_PER_NODE: usize = 10;
/// The node every scenario has, never cordoned; with the second one the policy's "never the
/// last schedulable node" rule never refuses, and pods always have somewhere to go.
const KEPT_NODE: &str = "node-2";
/// The template annotation of `kubectl rollout restart`.
const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";

/// The fault rules of a run: [`ERROR_SHARE`] of all requests fail, on every verb and
/// resource; the same share is answered [`FAULT_LATENCY`] late.
pub fn fault_rules() -> Vec<FaultRule> {
    // Independent rules: each fires with `p`, so that 1 - (1 - p)^4 = ERROR_SHARE.
    let p = 1.0 - (1.0 - ERROR_SHARE).powf(1.0 / ERROR_CODES.len() as f64);
    ERROR_CODES
        .iter()
        .map(|&code| FaultRule {
            error_status: Some(code),
            probability: p,
            ..Default::default()
        })
        .chain(std::iter::once(FaultRule {
            latency: Some(FAULT_LATENCY),
            probability: ERROR_SHARE,
            ..Default::default()
        }))
        .collect()
}

/// How many targets of each kind a run of `executions` spreads over.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    pub executions: usize,
    /// `scale-N`, 1 replica at first: scaled and restarted in turns.
    pub deployments: usize,
    /// `pods-N`, [`PODS_PER_DEPLOYMENT`] replicas: their pods are restarted.
    pub pod_deployments: usize,
    /// `node-1N`: cordoned and uncordoned in turns.
    pub nodes: usize,
}

impl Layout {
    pub fn for_executions(executions: usize) -> Layout {
        Layout {
            executions,
            deployments: (executions * 6 / 10 / EXECUTIONS_PER_DEPLOYMENT).max(3),
            pod_deployments: (executions * 2 / 10).div_ceil(PODS_PER_DEPLOYMENT).max(1),
            nodes: (executions * 2 / 10 / EXECUTIONS_PER_NODE).max(2),
        }
    }

    /// The objects to add to a scenario that has `node-1` (`Scenario::empty` does).
    pub fn objects(&self) -> Vec<Value> {
        let mut objects = vec![sim::mk_namespace(NS), sim::mk_node(KEPT_NODE)];
        objects.extend((0..self.nodes).map(|i| sim::mk_node(&node_name(i))));
        objects.extend(
            (0..self.deployments)
                .map(|i| sim::mk_deployment(NS, &format!("scale-{i}"), 1, "nginx:1.25")),
        );
        objects.extend((0..self.pod_deployments).map(|i| {
            sim::mk_deployment(
                NS,
                &format!("pods-{i}"),
                PODS_PER_DEPLOYMENT as i64,
                "nginx:1.25",
            )
        }));
        objects
    }
}

fn node_name(i: usize) -> String {
    format!("node-{}", 10 + i)
}

/// One execution to ask for.
#[derive(Debug, Clone)]
pub struct Planned {
    pub action: &'static str,
    /// `Deployment`, `Pod` or `Node`.
    pub kind: &'static str,
    pub name: String,
    pub params: Value,
}

impl Planned {
    fn new(action: &'static str, kind: &'static str, name: String, params: Value) -> Planned {
        Planned {
            action,
            kind,
            name,
            params,
        }
    }

    /// The object it changes, as the cluster's record names it: (plural, namespace, name).
    fn object(&self) -> (&'static str, &'static str, &str) {
        match self.kind {
            "Deployment" => ("deployments", NS, &self.name),
            "Pod" => ("pods", NS, &self.name),
            _ => ("nodes", "", &self.name),
        }
    }

    fn describe(&self) -> String {
        let (plural, ns, name) = self.object();
        let at = if ns.is_empty() {
            format!("{plural}/{name}")
        } else {
            format!("{plural}/{ns}/{name}")
        };
        format!("{} {} on {at}", self.action, self.params)
    }

    fn request(&self, request_id: String) -> proto::ExecuteRequest {
        proto::ExecuteRequest {
            action: self.action.into(),
            target: Some(proto::Target {
                namespace: if self.kind == "Node" { "" } else { NS }.into(),
                kind: self.kind.into(),
                name: self.name.clone(),
                ..Default::default()
            }),
            parameters: Some(to_struct(&self.params)),
            request_id,
            timeout: Some(prost_types::Duration {
                seconds: TIMEOUT.as_secs() as i64,
                nanos: 0,
            }),
            ..Default::default()
        }
    }
}

/// The pods `restart_pod` may target, one deployment after another in turn, so that
/// consecutive restarts hit different deployments.
///
/// # Errors
/// The API error of the list.
pub async fn pod_targets(kube: &kube::Client) -> anyhow::Result<Vec<String>> {
    let pods = Api::<Pod>::namespaced(kube.clone(), NS)
        .list(&ListParams::default())
        .await?;
    let mut by_app: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for pod in &pods.items {
        let app = pod.labels().get("app").cloned().unwrap_or_default();
        if app.starts_with("pods-") && pod.metadata.deletion_timestamp.is_none() {
            by_app.entry(app).or_default().push(pod.name_any());
        }
    }
    let mut names = Vec::new();
    for round in 0.. {
        let before = names.len();
        names.extend(by_app.values().filter_map(|pods| pods.get(round).cloned()));
        if names.len() == before {
            break;
        }
    }
    Ok(names)
}

/// The load: in every ten executions, two scales that wait for their rollout, two that do
/// not, two rolling restarts (all on the `scale-N` deployments, in turns), two pod restarts
/// (one waiting for the replacement to be Ready, one not; each on its own pod), one cordon
/// and one uncordon.
pub fn plan(layout: &Layout, pods: &[String]) -> Vec<Planned> {
    let mut on_deployment = vec![0usize; layout.deployments];
    let (mut deployment, mut pod, mut cordon, mut uncordon) = (0, 0, 0, 0);
    (0..layout.executions)
        .map(|i| match i % 10 {
            slot @ 0..=5 => {
                let k = deployment % layout.deployments;
                deployment += 1;
                let turn = on_deployment[k];
                on_deployment[k] += 1;
                let name = format!("scale-{k}");
                match slot {
                    0..=3 => Planned::new(
                        "scale_deployment",
                        "Deployment",
                        name,
                        // 2, 3, 1, 2, ...: each scale changes something.
                        json!({"replicas": 1 + (turn + 1) % 3, "wait_for_rollout": slot < 2}),
                    ),
                    _ => Planned::new("rolling_restart_deployment", "Deployment", name, json!({})),
                }
            }
            slot @ 6..=7 => {
                let name = pods
                    .get(pod % pods.len().max(1))
                    .cloned()
                    .unwrap_or_default();
                pod += 1;
                Planned::new("restart_pod", "Pod", name, json!({"wait_ready": slot == 6}))
            }
            8 => {
                cordon += 1;
                let node = node_name((cordon - 1) % layout.nodes);
                Planned::new("cordon_node", "Node", node, json!({}))
            }
            _ => {
                uncordon += 1;
                let node = node_name((uncordon - 1) % layout.nodes);
                Planned::new("uncordon_node", "Node", node, json!({}))
            }
        })
        .collect()
}

/// What happened to one planned execution.
#[derive(Debug)]
pub struct Run {
    pub planned: Planned,
    /// The execution's id, or why Execute refused it on its last attempt.
    pub admitted: Result<String, String>,
    /// Execute attempts refused before the one that answered.
    pub retries: u32,
    /// WatchExecution from the start, opened as soon as Execute answered, until the
    /// terminal event.
    pub live: Vec<proto::ExecutionEvent>,
    /// Why the live stream did not reach a terminal event.
    pub unfinished: Option<String>,
    /// GetExecution, with its events, after the end.
    pub record: Option<proto::Execution>,
    pub replay: Vec<proto::ExecutionEvent>,
}

/// Runs `plan` through `grpc`, `clients` executions at a time (each client asks for one,
/// follows it to its end, then takes the next), at most 100 over one channel.
pub async fn run(
    grpc: ExecutorServiceClient<Channel>,
    plan: Vec<Planned>,
    clients: usize,
) -> Vec<Run> {
    let plan = Arc::new(plan);
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..clients.max(1))
        .map(|_| {
            let (grpc, plan, next) = (grpc.clone(), plan.clone(), next.clone());
            tokio::spawn(async move {
                let mut runs = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(planned) = plan.get(i) else { break };
                    runs.push((i, run_one(grpc.clone(), i, planned.clone()).await));
                }
                runs
            })
        })
        .collect();
    let mut runs = Vec::with_capacity(plan.len());
    for task in tasks {
        runs.extend(task.await.unwrap_or_default());
    }
    runs.sort_by_key(|(i, _)| *i);
    runs.into_iter().map(|(_, run)| run).collect()
}

async fn run_one(mut grpc: ExecutorServiceClient<Channel>, i: usize, planned: Planned) -> Run {
    let request = planned.request(format!("chaos-{i}"));
    let mut run = Run {
        planned,
        admitted: Err(String::new()),
        retries: 0,
        live: Vec::new(),
        unfinished: None,
        record: None,
        replay: Vec::new(),
    };
    let mut backoff = Duration::from_millis(100);
    let id = loop {
        match grpc.execute(request.clone()).await {
            Ok(answer) => break answer.into_inner().execution.unwrap_or_default().id,
            // What the cluster's errors turn into at admission; the request_id makes a retry
            // of an admitted request return the same execution.
            Err(status)
                if run.retries + 1 < SUBMIT_ATTEMPTS
                    && matches!(
                        status.code(),
                        Code::Unavailable | Code::Internal | Code::ResourceExhausted
                    ) =>
            {
                run.retries += 1;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            Err(status) => {
                run.admitted = Err(format!("{:?}: {}", status.code(), status.message()));
                return run;
            }
        }
    };
    run.admitted = Ok(id.clone());
    (run.live, run.unfinished) = follow(&mut grpc, &id).await;
    if let Ok(answer) = grpc
        .get_execution(proto::GetExecutionRequest {
            execution_id: id,
            include_events: true,
        })
        .await
    {
        let answer = answer.into_inner();
        run.record = answer.execution;
        run.replay = answer.events;
    }
    run
}

fn state_of(event: &proto::ExecutionEvent) -> ExecutionState {
    ExecutionState::try_from(event.state).unwrap_or(ExecutionState::Unspecified)
}

fn is_terminal(state: ExecutionState) -> bool {
    matches!(
        state,
        ExecutionState::Succeeded
            | ExecutionState::Failed
            | ExecutionState::Cancelled
            | ExecutionState::TimedOut
            | ExecutionState::RolledBack
            | ExecutionState::Interrupted
            | ExecutionState::Rejected
            | ExecutionState::Shadowed
    )
}

/// `SUCCEEDED` for `EXECUTION_STATE_SUCCEEDED`.
pub fn state_name(state: ExecutionState) -> &'static str {
    let name = state.as_str_name();
    name.strip_prefix("EXECUTION_STATE_").unwrap_or(name)
}

/// The execution's events from the start, live, until the terminal one; with why not, when
/// it did not come within its time (counted from RUNNING, restarted at ROLLING_BACK).
async fn follow(
    grpc: &mut ExecutorServiceClient<Channel>,
    id: &str,
) -> (Vec<proto::ExecutionEvent>, Option<String>) {
    let mut events = Vec::new();
    let mut stream = match grpc
        .watch_execution(proto::WatchExecutionRequest {
            execution_id: id.to_string(),
            from_sequence: 0,
        })
        .await
    {
        Ok(stream) => stream.into_inner(),
        Err(status) => return (events, Some(format!("WatchExecution refused: {status}"))),
    };
    let mut deadline = Instant::now() + WAIT_LIMIT;
    let mut phase = ExecutionState::Queued;
    loop {
        let next = tokio::time::timeout_at(deadline, stream.next()).await;
        let event = match next {
            Err(_) => {
                let last = events.last().map_or("no event".to_string(), |e| {
                    format!(
                        "last event #{} {}: {}",
                        e.sequence,
                        state_name(state_of(e)),
                        e.message
                    )
                });
                return (events, Some(format!("no terminal event in time; {last}")));
            }
            Ok(None) => {
                return (
                    events,
                    Some("the stream ended before the terminal event".into()),
                )
            }
            Ok(Some(Err(status))) => return (events, Some(format!("the stream failed: {status}"))),
            Ok(Some(Ok(item))) => item.event.unwrap_or_default(),
        };
        let state = state_of(&event);
        if matches!(state, ExecutionState::Running | ExecutionState::RollingBack) && state != phase
        {
            phase = state;
            deadline = Instant::now() + TIMEOUT + GRACE;
        }
        events.push(event);
        if is_terminal(state) {
            return (events, None);
        }
    }
}

/// The targets as the cluster holds them, read back with faults off.
#[derive(Debug, Default)]
pub struct ClusterState {
    /// Deployment → (spec.replicas, the template's restartedAt annotation).
    deployments: HashMap<String, (i64, Option<String>)>,
    /// Node → spec.unschedulable.
    nodes: HashMap<String, bool>,
    /// Pods that exist and are not being deleted.
    live_pods: HashMap<String, String>,
}

/// Reads every target back (call it once the faults are off).
///
/// # Errors
/// API errors of the lists.
pub async fn read_back(kube: &kube::Client) -> anyhow::Result<ClusterState> {
    let mut state = ClusterState::default();
    for d in Api::<Deployment>::namespaced(kube.clone(), NS)
        .list(&ListParams::default())
        .await?
    {
        let spec = d.spec.clone().unwrap_or_default();
        let restarted = spec
            .template
            .metadata
            .and_then(|m| m.annotations)
            .and_then(|a| a.get(RESTARTED_AT).cloned());
        state.deployments.insert(
            d.name_any(),
            (i64::from(spec.replicas.unwrap_or(1)), restarted),
        );
    }
    for n in Api::<Node>::all(kube.clone())
        .list(&ListParams::default())
        .await?
    {
        let cordoned = n.spec.as_ref().and_then(|s| s.unschedulable) == Some(true);
        state.nodes.insert(n.name_any(), cordoned);
    }
    for p in Api::<Pod>::namespaced(kube.clone(), NS)
        .list(&ListParams::default())
        .await?
    {
        if p.metadata.deletion_timestamp.is_none() {
            state
                .live_pods
                .insert(p.name_any(), p.metadata.uid.clone().unwrap_or_default());
        }
    }
    Ok(state)
}

/// The judgement of a run. Every list holds one line per finding, naming the execution, its
/// action, target and parameters.
#[derive(Debug, Default)]
pub struct Verdict {
    /// Executions admitted (Execute answered with an id).
    pub admitted: usize,
    /// Planned executions Execute refused on every attempt, with the last answer.
    pub refused: Vec<String>,
    /// Execute attempts refused before one was admitted, over all executions.
    pub retries: u64,
    /// The same by action.
    pub retries_by_action: BTreeMap<&'static str, u64>,
    /// Admitted executions by final state (`SUCCEEDED`, ...).
    pub by_state: BTreeMap<&'static str, usize>,
    /// The same by action.
    pub by_action: BTreeMap<&'static str, BTreeMap<&'static str, usize>>,
    /// Admitted executions whose live stream ended on a terminal event.
    pub terminal: usize,
    pub stuck: Vec<String>,
    /// Terminal, but later than their timeout (twice it with a rollback) plus [`GRACE`].
    pub over_time: Vec<String>,
    pub lost: Vec<String>,
    pub overlaps: Vec<String>,
    /// Writes (dry runs aside) to a target outside the window of every execution on it.
    pub stray_writes: Vec<String>,
    /// SUCCEEDED executions whose change is not in the cluster.
    pub missing_changes: Vec<String>,
    /// Executions that did not succeed, changed the cluster and do not say so.
    pub unreported_changes: Vec<String>,
    pub succeeded: usize,
    /// SUCCEEDED executions whose change was found.
    pub succeeded_verified: usize,
    /// Admitted executions that did not succeed.
    pub others: usize,
    /// Of those, the ones that left the pre-state or report what they changed.
    pub others_verified: usize,
    /// RUNNING → terminal of every terminal execution, sorted.
    pub durations: Vec<Duration>,
    /// Messages of executions that did not succeed, by action, first few (shortened).
    pub failure_examples: BTreeMap<&'static str, Vec<String>>,
    /// Executions that did not succeed because of an injected error, by action: (those that
    /// met it on a call they do not retry, those that gave up after every attempt).
    pub transient_failures: BTreeMap<&'static str, (usize, usize)>,
    /// Writes answered with an injected error status, by status.
    pub write_faults: BTreeMap<u16, usize>,
}

impl Verdict {
    /// Broken invariants, all kinds together: zero for a good run.
    pub fn violations(&self) -> usize {
        self.stuck.len()
            + self.over_time.len()
            + self.lost.len()
            + self.overlaps.len()
            + self.stray_writes.len()
            + self.missing_changes.len()
            + self.unreported_changes.len()
    }

    /// The findings, up to `each` lines of every kind.
    pub fn findings(&self, each: usize) -> String {
        let mut out = String::new();
        for (kind, lines) in [
            ("stuck", &self.stuck),
            ("over time", &self.over_time),
            ("lost events", &self.lost),
            ("overlap", &self.overlaps),
            ("stray write", &self.stray_writes),
            ("missing change", &self.missing_changes),
            ("unreported change", &self.unreported_changes),
        ] {
            for line in lines.iter().take(each) {
                out.push_str(&format!("{kind}: {line}\n"));
            }
            if lines.len() > each {
                out.push_str(&format!("{kind}: ... {} more\n", lines.len() - each));
            }
        }
        out
    }
}

/// One admitted execution as the judgement sees it.
struct Judged<'a> {
    run: &'a Run,
    id: &'a str,
    state: ExecutionState,
    /// RUNNING → terminal, from its own events.
    window: Option<(DateTime<Utc>, DateTime<Utc>)>,
    result: Value,
    rollback_data: Value,
}

impl Judged<'_> {
    fn who(&self) -> String {
        format!(
            "{} ({}, {})",
            self.id,
            state_name(self.state),
            self.run.planned.describe()
        )
    }

    /// Whether its events tell of a change it made (`marker` is the action's word for it).
    fn reports(&self, marker: &str) -> bool {
        self.run.live.iter().any(|e| e.message.contains(marker))
    }
}

fn time(ts: Option<prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    ts.and_then(|t| DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
}

/// Judges `runs` by their events, `writes` (the cluster's whole record) and `cluster` (read
/// back after the run with faults off).
pub fn judge(runs: &[Run], writes: &[Write], cluster: &ClusterState) -> Verdict {
    let mut v = Verdict::default();
    let mut judged = Vec::new();
    for run in runs {
        v.retries += u64::from(run.retries);
        *v.retries_by_action.entry(run.planned.action).or_default() += u64::from(run.retries);
        let id = match &run.admitted {
            Ok(id) => id.as_str(),
            Err(why) => {
                v.refused.push(format!("{}: {why}", run.planned.describe()));
                continue;
            }
        };
        v.admitted += 1;
        let state = run
            .live
            .last()
            .map(state_of)
            .filter(|s| is_terminal(*s))
            .unwrap_or(ExecutionState::Unspecified);
        let mut j = Judged {
            run,
            id,
            state,
            window: None,
            result: Value::Null,
            rollback_data: Value::Null,
        };
        if let Some(why) = &run.unfinished {
            v.stuck.push(format!("{}: {why}", j.who()));
        } else {
            v.terminal += 1;
        }
        check_events(&j, &mut v);
        let running = run
            .live
            .iter()
            .find(|e| state_of(e) == ExecutionState::Running)
            .and_then(|e| time(e.timestamp));
        let ended = run
            .live
            .last()
            .filter(|e| is_terminal(state_of(e)))
            .and_then(|e| time(e.timestamp));
        j.window = running.zip(ended);
        if let Some(record) = &run.record {
            j.result = record.result.clone().map_or(Value::Null, struct_json);
            j.rollback_data = record
                .rollback_data
                .clone()
                .map_or(Value::Null, struct_json);
        }
        if let Some((from, to)) = j.window {
            let took = (to - from).to_std().unwrap_or_default();
            v.durations.push(took);
            let rolled_back = run
                .live
                .iter()
                .any(|e| state_of(e) == ExecutionState::RollingBack);
            let allowed = TIMEOUT * if rolled_back { 2 } else { 1 } + GRACE;
            if took > allowed {
                v.over_time.push(format!(
                    "{}: ran {:.1} s, allowed {:.0} s",
                    j.who(),
                    took.as_secs_f64(),
                    allowed.as_secs_f64()
                ));
            }
        }
        if is_terminal(state) {
            let name = state_name(state);
            *v.by_state.entry(name).or_default() += 1;
            *v.by_action
                .entry(run.planned.action)
                .or_default()
                .entry(name)
                .or_default() += 1;
            if state != ExecutionState::Succeeded {
                let message = run.live.last().map_or("", |e| e.message.as_str());
                // The injected answers: "(injected fault)", or a 409's "Conflict".
                if message.contains("injected fault") || message.contains("Conflict") {
                    let last = format!("(attempt {LAST_ATTEMPT} of");
                    let gave_up = run.live.iter().any(|e| e.message.contains(&last));
                    let counts = v.transient_failures.entry(run.planned.action).or_default();
                    if gave_up {
                        counts.1 += 1;
                    } else {
                        counts.0 += 1;
                    }
                }
                let short: String = message.chars().take(160).collect();
                let examples = v.failure_examples.entry(run.planned.action).or_default();
                if examples.len() < 2 && !examples.contains(&short) {
                    examples.push(short);
                }
            }
        }
        judged.push(j);
    }
    v.durations.sort();
    for w in writes {
        if ERROR_CODES.contains(&w.status) {
            *v.write_faults.entry(w.status).or_default() += 1;
        }
    }
    // Per object, in the order the executions ran.
    let mut by_object: BTreeMap<(&str, &str, &str), Vec<&Judged>> = BTreeMap::new();
    for j in &judged {
        by_object.entry(j.run.planned.object()).or_default().push(j);
    }
    let mut verified: HashMap<&str, bool> = HashMap::new();
    for ((plural, ns, name), mut on) in by_object {
        on.sort_by_key(|j| j.window.map(|(from, _)| from));
        let writes: Vec<&Write> = writes
            .iter()
            .filter(|w| !w.dry_run && w.is_on(plural, ns, name))
            .collect();
        check_turns(&on, &writes, &mut v);
        let mut changes = Changes {
            writes: &writes,
            verdict: &mut v,
            verified: &mut verified,
        };
        match plural {
            "deployments" => changes.deployment(&on, cluster.deployments.get(name)),
            "nodes" => changes.node(&on, cluster.nodes.get(name).copied()),
            _ => changes.pod(&on, cluster.live_pods.contains_key(name)),
        }
    }
    for j in &judged {
        let ok = verified.get(j.id).copied().unwrap_or(true);
        match j.state {
            ExecutionState::Succeeded => {
                v.succeeded += 1;
                v.succeeded_verified += usize::from(ok);
            }
            ExecutionState::Unspecified => {}
            _ => {
                v.others += 1;
                v.others_verified += usize::from(ok);
            }
        }
    }
    v
}

/// The live stream is 1..=last with the terminal event last, and GetExecution agrees.
fn check_events(j: &Judged, v: &mut Verdict) {
    let live = &j.run.live;
    let sequences: Vec<u64> = live.iter().map(|e| e.sequence).collect();
    if sequences.iter().zip(1u64..).any(|(s, want)| *s != want) {
        v.lost
            .push(format!("{}: live sequences {sequences:?}", j.who()));
        return;
    }
    if j.run.unfinished.is_some() {
        return;
    }
    if let Some(early) = live[..live.len() - 1]
        .iter()
        .find(|e| is_terminal(state_of(e)))
    {
        v.lost.push(format!(
            "{}: terminal event #{} is not the last",
            j.who(),
            early.sequence
        ));
    }
    let same = |a: &proto::ExecutionEvent, b: &proto::ExecutionEvent| {
        (a.sequence, a.state, &a.message) == (b.sequence, b.state, &b.message)
    };
    let last = j.run.record.as_ref().map_or(0, |r| r.last_sequence);
    if j.run.replay.len() != live.len()
        || !j.run.replay.iter().zip(live).all(|(a, b)| same(a, b))
        || last != live.len() as u64
    {
        v.lost.push(format!(
            "{}: the live stream has {} events, GetExecution {} (last_sequence {last})",
            j.who(),
            live.len(),
            j.run.replay.len()
        ));
    }
}

/// On one object, the executions took turns (their windows do not overlap) and every write
/// fell inside the window of exactly one of them.
fn check_turns(on: &[&Judged], writes: &[&Write], v: &mut Verdict) {
    for pair in on.windows(2) {
        if let (Some((_, a_end)), Some((b_start, _))) = (pair[0].window, pair[1].window) {
            if b_start < a_end {
                v.overlaps.push(format!(
                    "{} started at {b_start} while {} ran until {a_end}",
                    pair[1].who(),
                    pair[0].who()
                ));
            }
        }
    }
    for w in writes {
        let inside: Vec<&&Judged> = on
            .iter()
            .filter(|j| {
                j.window
                    .is_some_and(|(from, to)| from <= w.started_at && w.finished_at <= to)
            })
            .collect();
        let what = format!(
            "{} {} {}/{} ({}) {} → {}",
            w.verb, w.resource, w.namespace, w.name, w.status, w.started_at, w.finished_at
        );
        match inside.as_slice() {
            [_] => {}
            [] => v.stray_writes.push(format!(
                "{what}: inside no execution's window; body {}",
                w.body
            )),
            many => v.overlaps.push(format!(
                "{what}: inside the windows of {}",
                many.iter()
                    .map(|j| j.who())
                    .collect::<Vec<_>>()
                    .join(" and ")
            )),
        }
    }
}

/// Follows the state of one object through the executions on it.
struct Changes<'w, 'j, 'm> {
    /// The object's writes, dry runs aside.
    writes: &'m [&'w Write],
    verdict: &'m mut Verdict,
    /// Executions found wanting (absent: fine).
    verified: &'m mut HashMap<&'j str, bool>,
}

impl<'w, 'j> Changes<'w, 'j, '_> {
    /// The writes of `j` that changed the cluster.
    fn applied(&self, j: &Judged) -> Vec<&'w Write> {
        let Some((from, to)) = j.window else {
            return Vec::new();
        };
        self.writes
            .iter()
            .copied()
            .filter(|w| w.applied() && from <= w.started_at && w.finished_at <= to)
            .collect()
    }

    fn missing(&mut self, j: &Judged<'j>, why: String) {
        self.verified.insert(j.id, false);
        self.verdict
            .missing_changes
            .push(format!("{}: {why}", j.who()));
    }

    fn unreported(&mut self, j: &Judged<'j>, why: String) {
        self.verified.insert(j.id, false);
        self.verdict
            .unreported_changes
            .push(format!("{}: {why}", j.who()));
    }

    /// Replicas and the restart annotation, from the first execution to the read-back.
    /// `None` where an execution that did not succeed left something its events report.
    fn deployment(&mut self, on: &[&Judged<'j>], now: Option<&(i64, Option<String>)>) {
        let mut replicas: Option<i64> = Some(1);
        let mut restarted: Option<Option<String>> = Some(None);
        // Who set each, to name in a finding.
        let (mut replicas_by, mut restarted_by): (Option<&Judged<'j>>, Option<&Judged<'j>>) =
            (None, None);
        for &j in on {
            let applied = self.applied(j);
            if j.run.planned.action == "scale_deployment" {
                let seen = j.rollback_data.get("replicas").and_then(Value::as_i64);
                if let (Some(seen), Some(want), Some(by)) = (seen, replicas, replicas_by) {
                    if seen != want {
                        let why = format!(
                            "left {want} replicas, but the next execution ({}) found {seen}",
                            j.id
                        );
                        self.missing(by, why);
                    }
                }
                let to = j.result.get("to").and_then(Value::as_i64);
                match j.state {
                    ExecutionState::Succeeded => {
                        let to = to.unwrap_or(-1);
                        let marker = format!("\"replicas\":{to}}}");
                        if seen != Some(to) && !applied.iter().any(|w| w.body.contains(&marker)) {
                            self.missing(j, format!("no write of replicas {to} in the record"));
                        }
                        (replicas, replicas_by) = (Some(to), Some(j));
                    }
                    _ if applied.is_empty() => {}
                    ExecutionState::RolledBack => {}
                    _ => {
                        if !j.reports("scaled ") {
                            self.unreported(j, format!("{} writes, none reported", applied.len()));
                        }
                        replicas = applied
                            .last()
                            .and_then(|w| serde_json::from_str::<Value>(&w.body).ok())
                            .and_then(|b| b.pointer("/spec/replicas").and_then(Value::as_i64));
                        replicas_by = Some(j);
                    }
                }
            } else {
                let seen = j.rollback_data.get("template_annotations").map(|a| {
                    a.get(RESTARTED_AT)
                        .and_then(Value::as_str)
                        .map(String::from)
                });
                if let (Some(seen), Some(want), Some(by)) = (&seen, &restarted, restarted_by) {
                    if seen != want {
                        let why = format!(
                            "left restartedAt {want:?}, but the next execution ({}) found {seen:?}",
                            j.id
                        );
                        self.missing(by, why);
                    }
                }
                match j.state {
                    ExecutionState::Succeeded => {
                        let at = j
                            .result
                            .get("restarted_at")
                            .and_then(Value::as_str)
                            .unwrap_or("?")
                            .to_string();
                        if !applied.iter().any(|w| w.body.contains(&at)) {
                            self.missing(j, format!("no write of restartedAt {at} in the record"));
                        }
                        (restarted, restarted_by) = (Some(Some(at)), Some(j));
                    }
                    _ if applied.is_empty() => {}
                    ExecutionState::RolledBack => {}
                    _ => {
                        if !j.reports("restarted ") {
                            self.unreported(j, format!("{} writes, none reported", applied.len()));
                        }
                        (restarted, restarted_by) = (None, Some(j));
                    }
                }
            }
        }
        let Some((now_replicas, now_restarted)) = now else {
            return;
        };
        if let (Some(want), Some(by)) = (replicas, replicas_by) {
            if *now_replicas != want {
                self.missing(
                    by,
                    format!("the deployment has {now_replicas} replicas, not {want}"),
                );
            }
        }
        if let (Some(want), Some(by)) = (restarted, restarted_by) {
            if *now_restarted != want {
                self.missing(
                    by,
                    format!("the deployment's restartedAt is {now_restarted:?}, not {want:?}"),
                );
            }
        }
    }

    /// `spec.unschedulable`, from the first execution to the read-back.
    fn node(&mut self, on: &[&Judged<'j>], now: Option<bool>) {
        let mut cordoned: Option<bool> = Some(false);
        let mut by: Option<&Judged<'j>> = None;
        for &j in on {
            let target = j.run.planned.action == "cordon_node";
            let applied = self.applied(j);
            let seen = j
                .rollback_data
                .get("unschedulable")
                .and_then(Value::as_bool);
            if let (Some(seen), Some(want), Some(prev)) = (seen, cordoned, by) {
                if seen != want {
                    let why = format!(
                        "left unschedulable {want}, but the next execution ({}) found {seen}",
                        j.id
                    );
                    self.missing(prev, why);
                }
            }
            match j.state {
                ExecutionState::Succeeded => {
                    let changed = j.result.get("changed").and_then(Value::as_bool) != Some(false);
                    if changed && applied.is_empty() {
                        self.missing(j, "no write to the node in the record".into());
                    }
                    (cordoned, by) = (Some(target), Some(j));
                }
                _ if applied.is_empty() => {}
                _ => {
                    if !j.reports("cordoned") {
                        self.unreported(j, format!("{} writes, none reported", applied.len()));
                    }
                    (cordoned, by) = (None, Some(j));
                }
            }
        }
        if let (Some(want), Some(by), Some(now)) = (cordoned, by, now) {
            if now != want {
                self.missing(by, format!("the node's unschedulable is {now}, not {want}"));
            }
        }
    }

    /// A pod is restarted once: gone if that succeeded, still there if it wrote nothing.
    fn pod(&mut self, on: &[&Judged<'j>], alive: bool) {
        for &j in on {
            let deleted = self.applied(j).iter().any(|w| w.verb == "delete");
            match j.state {
                ExecutionState::Succeeded if !deleted => {
                    self.missing(j, "no delete of the pod in the record".into())
                }
                ExecutionState::Succeeded if alive => {
                    self.missing(j, "the pod is still there".into())
                }
                ExecutionState::Succeeded => {}
                _ if deleted && !j.reports("deleted pod") => {
                    self.unreported(j, "deleted the pod without saying so".into())
                }
                _ if !deleted && !alive && on.len() == 1 => {
                    self.missing(j, "wrote nothing, yet the pod is gone".into())
                }
                _ => {}
            }
        }
    }
}

/// Parameters (flat JSON: numbers, booleans, strings) as a protobuf Struct.
fn to_struct(v: &Value) -> prost_types::Struct {
    use prost_types::value::Kind;
    let kind = |v: &Value| match v {
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => Kind::StringValue(s.clone()),
        _ => Kind::NullValue(0),
    };
    prost_types::Struct {
        fields: v
            .as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            prost_types::Value {
                                kind: Some(kind(v)),
                            },
                        )
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// A protobuf Struct as JSON (numbers as integers where they are whole).
fn struct_json(s: prost_types::Struct) -> Value {
    fn value(v: prost_types::Value) -> Value {
        use prost_types::value::Kind;
        match v.kind {
            Some(Kind::BoolValue(b)) => json!(b),
            Some(Kind::NumberValue(n)) if n.fract() == 0.0 && n.abs() < 1e15 => json!(n as i64),
            Some(Kind::NumberValue(n)) => json!(n),
            Some(Kind::StringValue(s)) => json!(s),
            Some(Kind::ListValue(l)) => Value::Array(l.values.into_iter().map(value).collect()),
            Some(Kind::StructValue(s)) => struct_json(s),
            Some(Kind::NullValue(_)) | None => Value::Null,
        }
    }
    Value::Object(s.fields.into_iter().map(|(k, v)| (k, value(v))).collect())
}
