//! History survives the process: a SIGKILLed server restarts on the same store with every
//! execution accounted for, its events intact, and nothing re-applied; request_id makes
//! retries safe, also under concurrency and across restarts.

mod common;

use std::time::Duration;

use common::{mk_request, mk_target, ServeProcess};
use executor_service::{
    api::proto::{
        executor_service_client::ExecutorServiceClient, Execution, ExecutionEvent, ExecutionState,
        GetExecutionRequest, ListExecutionsRequest,
    },
    engine::EngineConfig,
    store,
};
use k8s_openapi::api::apps::v1::Deployment;
use kube::{
    api::{Patch, PatchParams},
    config::{KubeConfigOptions, Kubeconfig},
    Api,
};
use serde_json::json;
use tonic::{transport::Channel, Code};

async fn connect(addr: &str) -> ExecutorServiceClient<Channel> {
    ExecutorServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect")
}

async fn get(
    client: &mut ExecutorServiceClient<Channel>,
    id: &str,
) -> (Execution, Vec<ExecutionEvent>) {
    let got = client
        .get_execution(GetExecutionRequest {
            execution_id: id.into(),
            include_events: true,
        })
        .await
        .unwrap_or_else(|e| panic!("{id}: {e:?}"))
        .into_inner();
    (got.execution.unwrap(), got.events)
}

async fn kube_client(path: &std::path::Path) -> kube::Client {
    let config = kube::Config::from_custom_kubeconfig(
        Kubeconfig::read_from(path).unwrap(),
        &KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    kube::Client::try_from(config).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_server_restarts_with_every_execution_accounted_for_and_none_reapplied() {
    let dir = tempfile::tempdir().unwrap();
    let store_path = dir.path().join("history.db").display().to_string();
    let mut first = ServeProcess::start(&["--store", &store_path]);
    let mut client = connect(&first.addr).await;

    let mut finished = mk_request(
        "scale_deployment",
        mk_target("production", "Deployment", "web"),
        json!({"replicas": 4}),
    );
    finished.wait = true;
    finished.request_id = "ticket-1".into();
    let finished = client
        .execute(finished)
        .await
        .unwrap()
        .into_inner()
        .execution
        .unwrap();
    assert_eq!(
        finished.state,
        ExecutionState::Succeeded as i32,
        "{}",
        finished.message
    );

    // A rollout that cannot finish: RUNNING when the process dies.
    let kube = kube_client(&first.kubeconfig).await;
    Api::<Deployment>::namespaced(kube, "production")
        .patch(
            "worker",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [{"name": "worker", "image": "example/worker:crashloop"}]}}}})),
        )
        .await
        .unwrap();
    let running = client
        .execute(mk_request(
            "rolling_restart_deployment",
            mk_target("production", "Deployment", "worker"),
            json!({}),
        ))
        .await
        .unwrap()
        .into_inner()
        .execution
        .unwrap();
    // Waits behind it for the same target: QUEUED when the process dies.
    let queued = client
        .execute(mk_request(
            "scale_deployment",
            mk_target("production", "Deployment", "worker"),
            json!({"replicas": 3}),
        ))
        .await
        .unwrap()
        .into_inner()
        .execution
        .unwrap();
    loop {
        let (e, events) = get(&mut client, &running.id).await;
        if e.state == ExecutionState::Running as i32 && events.iter().any(|e| e.progress.is_some())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, queued_before) = get(&mut client, &queued.id).await;
    let (_, finished_before) = get(&mut client, &finished.id).await;
    let (_, running_before) = get(&mut client, &running.id).await;

    first.child.kill().expect("SIGKILL the server");
    first.child.wait().unwrap();

    let second = ServeProcess::start(&["--store", &store_path]);
    let mut client = connect(&second.addr).await;
    let (done, events) = get(&mut client, &finished.id).await;
    assert_eq!(done.state, ExecutionState::Succeeded as i32);
    assert_eq!(
        events, finished_before,
        "a finished execution's history is intact"
    );

    let (interrupted, interrupted_events) = get(&mut client, &running.id).await;
    assert_eq!(
        interrupted.state,
        ExecutionState::Interrupted as i32,
        "{}",
        interrupted.message
    );
    assert!(
        interrupted_events.len() > running_before.len(),
        "the interruption is recorded as an event"
    );
    // What was persisted before the kill agrees with what we saw, in order (write-behind may
    // lose the last few progress events, never reorder them). The execution went on between
    // our read and the kill, so the store may also hold events recorded after that read.
    let kept = interrupted_events.len() - 1;
    let seen = kept.min(running_before.len());
    assert!(seen > 0, "the store kept the execution's events");
    assert_eq!(&interrupted_events[..seen], &running_before[..seen]);
    let last = interrupted_events.last().unwrap();
    assert!(
        last.message.contains("it was not re-applied"),
        "{}",
        last.message
    );

    let (never_started, events) = get(&mut client, &queued.id).await;
    assert_eq!(never_started.state, ExecutionState::Interrupted as i32);
    assert!(
        events
            .last()
            .unwrap()
            .message
            .contains("nothing was changed"),
        "{:?}",
        events.last()
    );
    assert_eq!(&events[..queued_before.len()], &queued_before[..]);

    // Nothing is re-applied later either: the interrupted execution's history stays as the
    // restarted server first showed it...
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        events_of(&mut client, &running.id).await,
        interrupted_events,
        "the interrupted rollout was resumed after the restart"
    );
    // ...and the restarted server's cluster (a fresh demo cluster) never saw the scale, the
    // rollout or the queued scale again: no spec change on either deployment.
    let deployments =
        Api::<Deployment>::namespaced(kube_client(&second.kubeconfig).await, "production");
    for name in ["web", "worker"] {
        let d = deployments.get(name).await.unwrap();
        assert_eq!(
            d.metadata.generation,
            Some(1),
            "deployment {name} was changed after the restart: {:?}",
            d.spec
        );
    }

    let listed = client
        .list_executions(ListExecutionsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = listed.executions.iter().map(|e| e.id.as_str()).collect();
    for id in [&finished.id, &running.id, &queued.id] {
        assert!(ids.contains(&id.as_str()), "{id} missing from {ids:?}");
    }
    assert!(listed
        .executions
        .iter()
        .all(|e| e.state != ExecutionState::Running as i32));

    // The same request_id after the restart is the same execution, not a second scale.
    let mut retry = mk_request(
        "scale_deployment",
        mk_target("production", "Deployment", "web"),
        json!({"replicas": 4}),
    );
    retry.request_id = "ticket-1".into();
    let same = client
        .execute(retry)
        .await
        .unwrap()
        .into_inner()
        .execution
        .unwrap();
    assert_eq!(same.id, finished.id);
    // And WatchExecution replays a past execution's whole history.
    let replayed = common::watch_all(&mut client, &finished.id, 0).await;
    assert_eq!(replayed, finished_before);
}

/// The in-process harness with its history in a SQLite file under `dir`.
async fn on_sqlite(dir: &std::path::Path, config: EngineConfig) -> common::Harness {
    let store = store::open(&dir.join("h.db").display().to_string())
        .await
        .unwrap();
    common::Harness::start(
        EngineConfig {
            store: Some(store),
            ..config
        },
        executor_service::sim::Scenario::demo(),
    )
    .await
}

/// Runs `notify_only` with `message` to its end.
async fn notify(client: &mut ExecutorServiceClient<Channel>, message: &str) -> Execution {
    common::run_to_end(
        client,
        "notify_only",
        mk_target("production", "Deployment", "web"),
        json!({ "message": message }),
    )
    .await
}

async fn events_of(client: &mut ExecutorServiceClient<Channel>, id: &str) -> Vec<ExecutionEvent> {
    get(client, id).await.1
}

async fn twenty_concurrent_executes_with_one_request_id_create_one_execution(config: EngineConfig) {
    let h = common::Harness::start(config, executor_service::sim::Scenario::demo()).await;
    let client = h.grpc().await;
    let mut calls = Vec::new();
    for _ in 0..20 {
        let mut c = client.clone();
        calls.push(tokio::spawn(async move {
            let mut r = mk_request(
                "scale_deployment",
                mk_target("production", "Deployment", "web"),
                json!({"replicas": 5}),
            );
            r.request_id = "incident-42".into();
            c.execute(r)
                .await
                .unwrap()
                .into_inner()
                .execution
                .unwrap()
                .id
        }));
    }
    let mut ids = Vec::new();
    for call in calls {
        ids.push(call.await.unwrap());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "one execution for one request_id: {ids:?}");
    let mut c = client.clone();
    let listed = c
        .list_executions(ListExecutionsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.executions.len(), 1);
    let mut different = mk_request(
        "scale_deployment",
        mk_target("production", "Deployment", "web"),
        json!({"replicas": 6}),
    );
    different.request_id = "incident-42".into();
    let err = c.execute(different).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idempotency_under_concurrency_in_memory() {
    twenty_concurrent_executes_with_one_request_id_create_one_execution(EngineConfig::default())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idempotency_under_concurrency_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = store::open(&dir.path().join("h.db").display().to_string())
        .await
        .unwrap();
    twenty_concurrent_executes_with_one_request_id_create_one_execution(EngineConfig {
        store: Some(store),
        ..Default::default()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn finished_executions_beyond_the_memory_bound_are_served_from_the_store() {
    use executor_service::api::proto::CancelExecutionRequest;
    let dir = tempfile::tempdir().unwrap();
    let h = on_sqlite(
        dir.path(),
        EngineConfig {
            finished_in_memory: 2,
            ..Default::default()
        },
    )
    .await;
    let mut client = h.grpc().await;
    let request = |k: usize| {
        let mut r = mk_request(
            "notify_only",
            mk_target("production", "Deployment", "web"),
            json!({"message": format!("note {k}")}),
        );
        r.request_id = format!("note-{k}");
        r.wait = true;
        r
    };
    let mut ids = Vec::new();
    for k in 0..5 {
        let execution = client
            .execute(request(k))
            .await
            .unwrap()
            .into_inner()
            .execution
            .unwrap();
        assert_eq!(execution.state, ExecutionState::Succeeded as i32);
        ids.push(execution.id);
    }
    // Only the newest two finished executions stay in memory (each leaves once its history is
    // written, just after its caller got the answer)...
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while h.engine.executions_in_memory() > 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(h.engine.executions_in_memory(), 2, "executions in memory");
    // ...yet every one reads as before: get, watch (replay), list, idempotent retry, cancel.
    for (k, id) in ids.iter().enumerate() {
        let (execution, events) = get(&mut client, id).await;
        assert_eq!(execution.state, ExecutionState::Succeeded as i32, "{k}");
        assert_eq!(
            events.last().map(|e| e.state),
            Some(ExecutionState::Succeeded as i32)
        );
        assert_eq!(
            common::watch_all(&mut client, id, 0).await,
            events,
            "watch replays the stored history of execution {k}"
        );
    }
    let listed = client
        .list_executions(ListExecutionsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.executions.len(), 5);
    let again = client
        .execute(request(0))
        .await
        .unwrap()
        .into_inner()
        .execution
        .unwrap();
    assert_eq!(again.id, ids[0], "same request_id, same execution");
    let err = client
        .cancel_execution(CancelExecutionRequest {
            execution_id: ids[0].clone(),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("already ended"), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_execute_abandoned_at_any_moment_never_leaves_a_stored_execution_that_does_not_run() {
    use executor_service::domain::{ExecutionRequest, ListFilter, RequestedTarget};
    let dir = tempfile::tempdir().unwrap();
    let h = on_sqlite(dir.path(), EngineConfig::default()).await;
    // A caller that gives up after 0, 0.1, 0.2 … ms: some before the execution is stored, some
    // while its round is being written, some after.
    for k in 0..40u64 {
        let request = ExecutionRequest {
            action: "notify_only".into(),
            target: RequestedTarget {
                namespace: "production".into(),
                kind: "Deployment".into(),
                name: "web".into(),
                ..Default::default()
            },
            parameters: json!({"message": format!("note {k}")})
                .as_object()
                .unwrap()
                .clone(),
            request_id: format!("abandoned-{k}"),
            ..Default::default()
        };
        let _ =
            tokio::time::timeout(Duration::from_micros(k * 100), h.engine.submit(request)).await;
    }
    // Whatever was stored runs to its end.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (page, _) = h
            .engine
            .list(
                &ListFilter {
                    page_size: 100,
                    ..Default::default()
                },
                executor_service::engine::ANONYMOUS,
            )
            .await
            .unwrap();
        let stuck: Vec<_> = page
            .iter()
            .filter(|v| !v.state.is_terminal())
            .map(|v| (v.request_id.clone(), v.state))
            .collect();
        if stuck.is_empty() {
            assert!(
                !page.is_empty(),
                "no abandoned request got as far as the store"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "stored but never run: {stuck:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A history whose rounds that record no new execution fail while `failing` is set (a disk
/// that fills up after the execution was accepted), and whose every round takes `round_time`
/// (a slow disk).
struct FlakyStore {
    inner: store::MemoryStore,
    failing: std::sync::atomic::AtomicBool,
    round_time: Duration,
}

#[async_trait::async_trait]
impl store::Store for FlakyStore {
    async fn insert(
        &self,
        execution: &executor_service::domain::ExecutionView,
        fingerprint: &str,
    ) -> Result<(), store::StoreError> {
        self.inner.insert(execution, fingerprint).await
    }
    async fn find_request(
        &self,
        request_id: &str,
    ) -> Result<Option<(executor_service::domain::ExecutionView, String)>, store::StoreError> {
        self.inner.find_request(request_id).await
    }
    async fn update(
        &self,
        execution: &executor_service::domain::ExecutionView,
    ) -> Result<(), store::StoreError> {
        self.inner.update(execution).await
    }
    async fn append_events(
        &self,
        execution_id: &str,
        events: &[executor_service::domain::Event],
    ) -> Result<(), store::StoreError> {
        self.inner.append_events(execution_id, events).await
    }
    async fn get(
        &self,
        id: &str,
    ) -> Result<Option<executor_service::domain::ExecutionView>, store::StoreError> {
        self.inner.get(id).await
    }
    async fn events(
        &self,
        id: &str,
        after: u64,
    ) -> Result<Vec<executor_service::domain::Event>, store::StoreError> {
        self.inner.events(id, after).await
    }
    async fn list(
        &self,
        filter: &executor_service::domain::ListFilter,
    ) -> Result<(Vec<executor_service::domain::ExecutionView>, String), store::StoreError> {
        self.inner.list(filter).await
    }
    async fn unfinished(
        &self,
    ) -> Result<Vec<executor_service::domain::ExecutionView>, store::StoreError> {
        self.inner.unfinished().await
    }
    async fn write(
        &self,
        inserts: &[store::NewExecution],
        events: &[(String, Vec<executor_service::domain::Event>)],
        snapshots: &[executor_service::domain::ExecutionView],
    ) -> Result<Vec<Result<(), store::StoreError>>, store::StoreError> {
        tokio::time::sleep(self.round_time).await;
        if inserts.is_empty() && self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(store::StoreError::Backend("disk full".into()));
        }
        self.inner.write(inserts, events, snapshots).await
    }
    async fn prune(
        &self,
        older_than: chrono::DateTime<chrono::Utc>,
        keep: usize,
    ) -> Result<u64, store::StoreError> {
        self.inner.prune(older_than, keep).await
    }
    async fn track(
        &self,
        consumer: &str,
        id: &str,
        key: &str,
        owner: &str,
        until: chrono::DateTime<chrono::Utc>,
    ) -> Result<store::Publication, store::StoreError> {
        self.inner.track(consumer, id, key, owner, until).await
    }
    async fn advance(
        &self,
        consumer: &str,
        id: &str,
        owner: &str,
        sequence: u64,
        done: bool,
    ) -> Result<bool, store::StoreError> {
        self.inner
            .advance(consumer, id, owner, sequence, done)
            .await
    }
    async fn claim_publications(
        &self,
        consumer: &str,
        owner: &str,
        until: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<store::Tracked>, store::StoreError> {
        self.inner.claim_publications(consumer, owner, until).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_execution_whose_history_could_not_be_written_is_still_read_right() {
    let flaky = std::sync::Arc::new(FlakyStore {
        inner: store::MemoryStore::new(),
        failing: std::sync::atomic::AtomicBool::new(true),
        round_time: Duration::ZERO,
    });
    let h = common::Harness::start(
        EngineConfig {
            store: Some(flaky.clone()),
            // Evict every finished execution whose history was written.
            finished_in_memory: 0,
            ..Default::default()
        },
        executor_service::sim::Scenario::demo(),
    )
    .await;
    let mut client = h.grpc().await;
    let execution = notify(&mut client, "disk full").await;
    assert_eq!(execution.state, ExecutionState::Succeeded as i32);
    // Its events never reached the store (it still says QUEUED there), so the engine keeps
    // it in memory: what callers read is what happened, not the stale stored copy.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stored = store::Store::get(flaky.as_ref(), &execution.id)
        .await
        .unwrap()
        .unwrap();
    assert_ne!(stored.state.as_str(), "SUCCEEDED");
    let (read, events) = get(&mut client, &execution.id).await;
    assert_eq!(read.state, ExecutionState::Succeeded as i32);
    assert_eq!(
        events.last().map(|e| e.state),
        Some(ExecutionState::Succeeded as i32)
    );
    // Once writes work again, a later execution is stored and leaves memory as usual.
    flaky
        .failing
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let later = notify(&mut client, "disk fine").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while h.engine.executions_in_memory() > 1 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        h.engine.executions_in_memory(),
        1,
        "only the unstored one stays"
    );
    let (read, _) = get(&mut client, &later.id).await;
    assert_eq!(read.state, ExecutionState::Succeeded as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_execution_is_stored_as_running_before_its_change_reaches_the_cluster() {
    // On a slow disk the action's first patch would land long before RUNNING is stored; a
    // crash in between would be recovered as "before it started; nothing was changed".
    let slow = std::sync::Arc::new(FlakyStore {
        inner: store::MemoryStore::new(),
        failing: std::sync::atomic::AtomicBool::new(false),
        round_time: Duration::from_millis(100),
    });
    let h = common::Harness::start(
        EngineConfig {
            store: Some(slow.clone()),
            ..Default::default()
        },
        executor_service::sim::Scenario::demo(),
    )
    .await;
    let mut client = h.grpc().await;
    let execution = client
        .execute(mk_request(
            "increase_resources",
            mk_target("production", "Deployment", "web"),
            json!({"memory_limit": "1536Mi"}),
        ))
        .await
        .unwrap()
        .into_inner()
        .execution
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !h
        .sim
        .writes()
        .on("deployments", "production", "web")
        .iter()
        .any(|w| w.applied() && w.body.contains("1536Mi"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the change never reached the cluster"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let stored = store::Store::get(slow.as_ref(), &execution.id)
        .await
        .unwrap()
        .unwrap();
    assert_ne!(
        stored.state.as_str(),
        "QUEUED",
        "the cluster has the change while the history says the execution never started"
    );
}
