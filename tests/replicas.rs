//! Several `serve` replicas on one PostgreSQL (a database of each test's own) and one
//! simulated cluster in its own process, judged by the cluster's own record of writes and by
//! what every watcher received: each execution runs once, never two at once on one object,
//! cooldowns refuse as one replica would, a dead replica's execution ends INTERRUPTED without
//! being re-applied, and a paused one cannot write once another took over.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::{
    fresh_postgres_database, get_execution, kube_client_from, mk_request, mk_target, until_state,
    watch_all, Partition, ServeProcess, SimProcess,
};
use executor_service::api::proto::{
    executor_service_client::ExecutorServiceClient, ApproveExecutionRequest, Execution,
    ExecutionState,
};
use futures::StreamExt;
use serde_json::{json, Value};
use tonic::transport::Channel;

/// Replicas, each on its own port, one history; each reaches the database through a
/// connection the test can cut.
struct Group {
    sim: SimProcess,
    replicas: Vec<ServeProcess>,
    database: String,
    partitions: Vec<Partition>,
}

impl Group {
    async fn start(n: usize, extra: &[&str]) -> Group {
        Group::start_at(common::TEST_SPEED, n, extra).await
    }

    /// With the cluster's clock at `speed`.
    async fn start_at(speed: f64, n: usize, extra: &[&str]) -> Group {
        let sim = SimProcess::start_at(speed, &[]);
        let database = fresh_postgres_database().await;
        let mut flags = vec!["--rate-limit", "0"];
        flags.extend_from_slice(extra);
        let options: sqlx::postgres::PgConnectOptions = database.parse().unwrap();
        let upstream: std::net::SocketAddr =
            format!("127.0.0.1:{}", options.get_port()).parse().unwrap();
        let host_port = format!("127.0.0.1:{}", options.get_port());
        let mut replicas = Vec::new();
        let mut partitions = Vec::new();
        for _ in 0..n {
            let partition = Partition::start(upstream).await;
            let url = database.replace(&host_port, &partition.addr.to_string());
            replicas.push(ServeProcess::on_cluster(
                &sim.kubeconfig,
                std::path::Path::new(&url),
                &flags,
            ));
            partitions.push(partition);
        }
        Group {
            sim,
            replicas,
            database,
            partitions,
        }
    }

    async fn client(&self, i: usize) -> ExecutorServiceClient<Channel> {
        ExecutorServiceClient::connect(format!("http://{}", self.replicas[i].addr))
            .await
            .expect("connect to a replica")
    }

    /// The replica (index) whose process owns execution `id` now, from the database.
    async fn owner_of(&self, id: &str) -> Option<usize> {
        let pool = sqlx::PgPool::connect(&self.database).await.unwrap();
        let owner: Option<String> =
            sqlx::query_scalar("SELECT owner FROM executions WHERE id = $1")
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap();
        pool.close().await;
        let pid: u32 = owner?.split('/').nth(1)?.parse().ok()?;
        self.replicas.iter().position(|r| r.child.id() == pid)
    }
}

fn number(result: &Option<prost_types::Struct>, field: &str) -> i64 {
    match result
        .as_ref()
        .and_then(|s| s.fields.get(field))
        .and_then(|v| v.kind.clone())
    {
        Some(prost_types::value::Kind::NumberValue(n)) => n as i64,
        other => panic!("no number {field} in the result: {other:?}"),
    }
}

fn time(t: &Option<prost_types::Timestamp>) -> DateTime<Utc> {
    let t = t.as_ref().expect("a timestamp");
    DateTime::from_timestamp(t.seconds, t.nanos as u32).expect("a valid time")
}

/// Objects of the 300-execution run, and executions per object.
const OBJECTS: usize = 20;
const PER_OBJECT: usize = 15;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_run_each_execution_once_never_two_on_one_object_and_every_watcher_sees_every_event(
) {
    let group = Group::start(3, &["--workers", "4", "--lease", "3s"]).await;
    let kube = kube_client_from(&group.sim.kubeconfig).await;
    let deployments: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::namespaced(kube.clone(), "default");
    for o in 0..OBJECTS {
        let object = executor_service::sim::mk_deployment(
            "default",
            &format!("load-{o:02}"),
            0,
            "nginx:1.25",
        );
        deployments
            .create(
                &Default::default(),
                &serde_json::from_value(object).unwrap(),
            )
            .await
            .expect("create a deployment");
    }
    let mut clients = Vec::new();
    for i in 0..3 {
        clients.push(group.client(i).await);
    }
    // Submitted round-robin across the replicas, each watched from the next one.
    let runs = futures::stream::iter(0..OBJECTS * PER_OBJECT)
        .map(|i| {
            let mut accepting = clients[i % 3].clone();
            let mut watching = clients[(i + 1) % 3].clone();
            async move {
                let mut request = mk_request(
                    "scale_deployment",
                    mk_target("default", "Deployment", &format!("load-{:02}", i % OBJECTS)),
                    json!({ "replicas_increment": 1 }),
                );
                request.request_id = format!("replicas-{i:03}");
                let id = accepting
                    .execute(request)
                    .await
                    .unwrap_or_else(|e| panic!("execute {i}: {e}"))
                    .into_inner()
                    .execution
                    .expect("an execution")
                    .id;
                let events = watch_all(&mut watching, &id, 0).await;
                (i, id, events)
            }
        })
        .buffer_unordered(30)
        .collect::<Vec<_>>()
        .await;
    assert_eq!(runs.len(), OBJECTS * PER_OBJECT);

    // Every watcher got every event once, in order, to the terminal one; the history agrees.
    let mut reader = clients[2].clone();
    let mut by_object: BTreeMap<usize, Vec<Execution>> = BTreeMap::new();
    for (i, id, events) in &runs {
        let sequences: Vec<u64> = events.iter().map(|e| e.sequence).collect();
        assert_eq!(
            sequences,
            (1..=events.len() as u64).collect::<Vec<_>>(),
            "execution {i} ({id}): events out of order, missing or repeated"
        );
        let last = events.last().expect("events");
        assert_eq!(
            last.state(),
            ExecutionState::Succeeded,
            "execution {i}: {}",
            last.message
        );
        assert_eq!(
            events
                .iter()
                .filter(|e| e.state() == ExecutionState::Succeeded)
                .count(),
            1
        );
        let execution = get_execution(&mut reader, id).await;
        assert_eq!(
            execution.state(),
            ExecutionState::Succeeded,
            "{}",
            execution.message
        );
        assert_eq!(execution.last_sequence, last.sequence, "execution {i}");
        by_object.entry(i % OBJECTS).or_default().push(execution);
    }

    let record = group.sim.writes().await;
    let applied = common::applied_writes(&record);
    for (o, executions) in &mut by_object {
        let name = format!("load-{o:02}");
        // Each ran once on what the previous one left: the replica counts they started from
        // are 0, 1, …, 14, each exactly once (two at once would have read the same count).
        let mut from: Vec<i64> = executions
            .iter()
            .map(|e| number(&e.result, "from"))
            .collect();
        from.sort_unstable();
        assert_eq!(from, (0..PER_OBJECT as i64).collect::<Vec<_>>(), "{name}");
        // The cluster saw exactly one scale per execution.
        let scales = applied
            .iter()
            .filter(|w| w["resource"] == "deployments/scale" && w["name"] == name.as_str())
            .count();
        assert_eq!(scales, PER_OBJECT, "scale writes to {name}");
        let now = deployments.get(&name).await.unwrap();
        assert_eq!(
            now.spec.and_then(|s| s.replicas),
            Some(PER_OBJECT as i32),
            "{name}"
        );
        // Never two at once on one object.
        executions.sort_by_key(|e| time(&e.started_at));
        for pair in executions.windows(2) {
            assert!(
                time(&pair[0].finished_at) <= time(&pair[1].started_at),
                "{name}: {} and {} overlapped",
                pair[0].id,
                pair[1].id
            );
        }
    }
    // The namespace limit (5, the default) held across the replicas.
    let mut moments: Vec<(DateTime<Utc>, i32)> = by_object
        .values()
        .flatten()
        .flat_map(|e| [(time(&e.started_at), 1), (time(&e.finished_at), -1)])
        .collect();
    moments.sort();
    let mut running = 0;
    let mut most = 0;
    for (_, step) in moments {
        running += step;
        most = most.max(running);
    }
    assert!(most <= 5, "{most} executions ran at once in one namespace");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cooldown_refuses_across_replicas_exactly_as_one_replica_would() {
    let group = Group::start(3, &["--cooldown", "60s"]).await;
    let mut clients = Vec::new();
    for i in 0..3 {
        clients.push(group.client(i).await);
    }
    let request = || {
        mk_request(
            "scale_deployment",
            mk_target("production", "Deployment", "api"),
            json!({ "replicas_increment": 1 }),
        )
    };
    // Twelve at once on one object, four through each replica: one is admitted.
    let answers = futures::future::join_all((0..12).map(|i| {
        let mut client = clients[i % 3].clone();
        async move { client.execute(request()).await }
    }))
    .await;
    let admitted: Vec<Execution> = answers
        .iter()
        .filter_map(|a| a.as_ref().ok())
        .map(|r| r.get_ref().execution.clone().expect("an execution"))
        .collect();
    assert_eq!(admitted.len(), 1, "{answers:?}");
    for refused in answers.iter().filter_map(|a| a.as_ref().err()) {
        assert_eq!(
            refused.code(),
            tonic::Code::FailedPrecondition,
            "{refused:?}"
        );
        let message = refused.message();
        assert!(
            message.contains("production/deployment/api")
                && (message.contains("in flight") || message.contains("in cooldown until")),
            "{message}"
        );
    }
    let id = &admitted[0].id;
    until_state(
        &mut clients[1],
        id,
        &[ExecutionState::Succeeded],
        Duration::from_secs(30),
    )
    .await;
    // Ended: the object cools down, for every replica.
    for client in &mut clients {
        let refused = client.execute(request()).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
        assert!(
            refused.message().contains("in cooldown until")
                && refused.message().contains(id.as_str()),
            "{}",
            refused.message()
        );
    }
    // Another object is free.
    let other = clients[2]
        .execute(mk_request(
            "scale_deployment",
            mk_target("production", "Deployment", "worker"),
            json!({ "replicas_increment": 1 }),
        ))
        .await;
    assert!(other.is_ok(), "{other:?}");
}

/// Pods of the deployment a long drain evicts one at a time.
const SLOW_PODS: i64 = 18;

/// A group on a cluster at real speed, where draining a node takes a while: it holds a third
/// of a deployment of [`SLOW_PODS`] whose budget allows one disruption, so the drain evicts
/// one pod, waits for it to go and for its replacement to be Ready, then the next (a write
/// every few seconds). Returns the group and the drain, approved and running on some replica
/// that has evicted at least once.
async fn start_long_drain() -> (Group, String, String) {
    let group = Group::start_at(1.0, 3, &["--lease", "2s"]).await;
    let kube = kube_client_from(&group.sim.kubeconfig).await;
    let deployments: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::namespaced(kube.clone(), "default");
    deployments
        .create(
            &Default::default(),
            &serde_json::from_value(executor_service::sim::mk_deployment(
                "default",
                "slow",
                SLOW_PODS,
                "nginx:1.25",
            ))
            .unwrap(),
        )
        .await
        .expect("create the deployment");
    let budgets: kube::Api<k8s_openapi::api::policy::v1::PodDisruptionBudget> =
        kube::Api::namespaced(kube.clone(), "default");
    budgets
        .create(
            &Default::default(),
            &serde_json::from_value(executor_service::sim::mk_pdb(
                "default",
                "slow",
                "slow",
                executor_service::sim::PdbLimit::MaxUnavailable(1),
            ))
            .unwrap(),
        )
        .await
        .expect("create the budget");
    // Every pod of it Ready, so that the drain starts with a budget of one.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = deployments
            .get("slow")
            .await
            .unwrap()
            .status
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0);
        if i64::from(ready) == SLOW_PODS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the slow deployment never got Ready"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let node = "node-1".to_string();
    let mut first = group.client(0).await;
    let drain = first
        .execute(mk_request(
            "drain_node",
            mk_target("", "Node", &node),
            json!({ "eviction_retry_seconds": 1, "timeout_seconds": 600 }),
        ))
        .await
        .expect("execute the drain")
        .into_inner()
        .execution
        .expect("an execution");
    assert_eq!(
        drain.state(),
        ExecutionState::WaitingApproval,
        "{}",
        drain.message
    );
    // Approved through another replica.
    let mut second = group.client(1).await;
    second
        .approve_execution(ApproveExecutionRequest {
            execution_id: drain.id.clone(),
            approver: "oncall".into(),
            reason: "node is failing".into(),
        })
        .await
        .expect("approve");
    let mut third = group.client(2).await;
    until_state(
        &mut third,
        &drain.id,
        &[ExecutionState::Running],
        Duration::from_secs(30),
    )
    .await;
    let start = Instant::now();
    while slow_evictions(&group.sim.writes().await, None) == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the drain never evicted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (group, drain.id, node)
}

/// Evictions of the slow deployment's pods the cluster received (answered or refused),
/// after `after` if given.
fn slow_evictions(record: &Value, after: Option<DateTime<Utc>>) -> usize {
    record["writes"]
        .as_array()
        .expect("writes")
        .iter()
        .filter(|w| {
            w["resource"] == "pods/eviction"
                && w["name"].as_str().is_some_and(|n| n.starts_with("slow-"))
        })
        .filter(|w| {
            after.is_none_or(|after| {
                w["startedAt"]
                    .as_str()
                    .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                    .is_some_and(|t| t.with_timezone(&Utc) > after)
            })
        })
        .count()
}

/// Waits (15 s at most) until another replica ended execution `id` INTERRUPTED; its event.
async fn taken_over(
    client: &mut ExecutorServiceClient<Channel>,
    id: &str,
) -> executor_service::api::proto::ExecutionEvent {
    until_state(
        client,
        id,
        &[ExecutionState::Interrupted],
        Duration::from_secs(15),
    )
    .await;
    interrupted_event(client, id).await
}

/// The INTERRUPTED event of execution `id`, as a replica serves it.
async fn interrupted_event(
    client: &mut ExecutorServiceClient<Channel>,
    id: &str,
) -> executor_service::api::proto::ExecutionEvent {
    let events = watch_all(client, id, 0).await;
    let last = events.last().expect("events").clone();
    assert_eq!(
        last.state(),
        ExecutionState::Interrupted,
        "{}",
        last.message
    );
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_replicas_execution_ends_interrupted_within_the_lease_and_its_queue_runs_elsewhere(
) {
    let (group, drain, node) = start_long_drain().await;
    let owner = group.owner_of(&drain).await.expect("the drain's owner");
    let survivor = (owner + 1) % 3;
    let mut client = group.client(survivor).await;
    // Queued behind the drain on the same node.
    let uncordon = client
        .execute(mk_request(
            "uncordon_node",
            mk_target("", "Node", &node),
            json!({}),
        ))
        .await
        .expect("execute uncordon")
        .into_inner()
        .execution
        .expect("an execution");
    assert_eq!(uncordon.state(), ExecutionState::Queued);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        get_execution(&mut client, &uncordon.id).await.state(),
        ExecutionState::Queued
    );

    let victim = group.replicas[owner].child.id();
    let killed = Instant::now();
    assert!(std::process::Command::new("kill")
        .args(["-9", &victim.to_string()])
        .status()
        .unwrap()
        .success());
    let ended = until_state(
        &mut client,
        &drain,
        &[ExecutionState::Interrupted],
        Duration::from_secs(15),
    )
    .await;
    eprintln!(
        "R5: kill -9 → INTERRUPTED seen after {:?}",
        killed.elapsed()
    );
    // Lease 2 s, checked every third of it: well within 2 × the lease, plus the poll.
    assert!(
        killed.elapsed() < Duration::from_secs(8),
        "taken over after {:?}",
        killed.elapsed()
    );
    assert!(
        ended.message.contains("stopped renewing its lease")
            && ended.message.contains("not re-applied"),
        "{}",
        ended.message
    );
    let event = interrupted_event(&mut client, &drain).await;
    let details = event.details.expect("details");
    assert!(details.fields.contains_key("last_event"), "{details:?}");
    // The queued uncordon ran on a survivor.
    let done = until_state(
        &mut client,
        &uncordon.id,
        &[ExecutionState::Succeeded],
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(done.state(), ExecutionState::Succeeded, "{}", done.message);
    // Nothing of the drain was re-applied after its end.
    let at = time(&event.timestamp);
    assert_eq!(slow_evictions(&group.sim.writes().await, Some(at)), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_replica_cannot_write_once_another_took_its_execution_over() {
    let (group, drain, _node) = start_long_drain().await;
    let owner = group.owner_of(&drain).await.expect("the drain's owner");
    let mut client = group.client((owner + 1) % 3).await;
    let pid = group.replicas[owner].child.id().to_string();
    let signal = |sig: &str| {
        assert!(std::process::Command::new("kill")
            .args([sig, pid.as_str()])
            .status()
            .unwrap()
            .success())
    };
    signal("-STOP");
    let event = taken_over(&mut client, &drain).await;
    let taken_over = time(&event.timestamp);
    signal("-CONT");
    // The drain there evicts a pod every few seconds; give it time for several.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        slow_evictions(&group.sim.writes().await, Some(taken_over)),
        0,
        "the paused replica wrote to the cluster after the takeover"
    );
    // Nor to the history: the takeover's event is still the last.
    let events = watch_all(&mut client, &drain, 0).await;
    assert_eq!(events.last().map(|e| e.sequence), Some(event.sequence));
    // The resumed replica serves, and reads the truth.
    let mut resumed = group.client(owner).await;
    assert_eq!(
        get_execution(&mut resumed, &drain).await.state(),
        ExecutionState::Interrupted
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_cut_off_from_the_database_stops_writing_and_its_late_history_is_refused() {
    let (group, drain, _node) = start_long_drain().await;
    let owner = group.owner_of(&drain).await.expect("the drain's owner");
    let mut client = group.client((owner + 1) % 3).await;
    // The owner still reaches the cluster, not the database: it cannot renew its lease.
    group.partitions[owner].cut();
    let event = taken_over(&mut client, &drain).await;
    let taken_over = time(&event.timestamp);
    // The drain there evicts a pod every few seconds; its client refuses them once the lease
    // it last renewed has run out, which is before anyone could take it over.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        slow_evictions(&group.sim.writes().await, Some(taken_over)),
        0,
        "the cut-off replica wrote to the cluster after the takeover"
    );
    // Reconnected, it learns it lost the lease; what it writes of the execution is refused.
    group.partitions[owner].heal();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let events = watch_all(&mut client, &drain, 0).await;
    assert_eq!(events.last().map(|e| e.sequence), Some(event.sequence));
    let now = get_execution(&mut client, &drain).await;
    assert_eq!(now.state(), ExecutionState::Interrupted);
    assert_eq!(
        now.message, event.message,
        "the takeover's account was overwritten"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_reports_the_shared_store_and_turns_unready_when_it_cannot_be_reached() {
    let database = fresh_postgres_database().await;
    let options: sqlx::postgres::PgConnectOptions = database.parse().unwrap();
    let host_port = format!("127.0.0.1:{}", options.get_port());
    let partition = Partition::start(host_port.parse().unwrap()).await;
    let url = database.replace(&host_port, &partition.addr.to_string());
    let server = ServeProcess::start(&["--store", &url]);
    let http = common::plain_http();
    let health = || async {
        let response = http
            .get(format!("http://{}/health", server.http_addr))
            .send()
            .await
            .expect("GET /health");
        let status = response.status().as_u16();
        let body: Value = response.json().await.expect("a JSON body");
        (status, body)
    };
    let (status, body) = health().await;
    assert_eq!(
        (status, &body["store_reachable"]),
        (200, &json!(true)),
        "{body}"
    );
    partition.cut();
    let (status, body) = health().await;
    assert_eq!(
        (status, &body["store_reachable"]),
        (503, &json!(false)),
        "{body}"
    );
    partition.heal();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = health().await;
        if status == 200 {
            assert_eq!(body["store_reachable"], true);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still unready after the heal: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
