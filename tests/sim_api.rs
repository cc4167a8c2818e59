//! kube-rs against the simulated cluster: watches, optimistic concurrency, dry runs,
//! selectors, eviction under a PodDisruptionBudget, garbage collection, fault injection.

use std::time::Duration;

use executor_service::sim::{
    mk_deployment, mk_namespace, mk_node, mk_pdb, FaultRule, PdbLimit, Scenario, SimCluster,
    SimConfig,
};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{
    Api, DeleteParams, EvictParams, ListParams, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use kube::runtime::watcher;
use serde_json::json;

const SPEED: f64 = 20.0;

async fn start(scenario: Scenario) -> SimCluster {
    let cluster = SimCluster::start(SimConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        scenario,
        speed: SPEED,
    })
    .await
    .unwrap();
    cluster.wait_settled(Duration::from_secs(20)).await.unwrap();
    cluster
}

/// A client without kube-rs's default retries of 429/503, so tests see each answer.
async fn client_without_retries(cluster: &SimCluster) -> kube::Client {
    let mut config = kube::Config::new(cluster.url().parse().unwrap());
    config.default_namespace = "default".into();
    config.default_retry = false;
    kube::Client::try_from(config).unwrap()
}

fn api_error(e: kube::Error) -> (u16, String, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.reason, s.message),
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn configmap(name: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": {"k": "v1"}})).unwrap()
}

#[tokio::test]
async fn a_watch_sees_added_modified_deleted_in_order() {
    let cluster = start(Scenario::empty()).await;
    let cms: Api<ConfigMap> = Api::default_namespaced(cluster.client().await.unwrap());
    let rv = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = cms
        .watch(&WatchParams::default().timeout(10), &rv)
        .await
        .unwrap()
        .boxed();
    cms.create(&PostParams::default(), &configmap("a"))
        .await
        .unwrap();
    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "v2"}})),
    )
    .await
    .unwrap();
    cms.delete("a", &DeleteParams::default()).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let ev = tokio::time::timeout(Duration::from_secs(5), stream.try_next())
            .await
            .expect("event in time")
            .unwrap()
            .expect("stream open");
        match ev {
            WatchEvent::Added(c) => seen.push(("ADDED", c.data.unwrap()["k"].clone())),
            WatchEvent::Modified(c) => seen.push(("MODIFIED", c.data.unwrap()["k"].clone())),
            WatchEvent::Deleted(c) => seen.push(("DELETED", c.data.unwrap()["k"].clone())),
            WatchEvent::Bookmark(_) => {}
            WatchEvent::Error(e) => panic!("watch error {e:?}"),
        }
    }
    assert_eq!(
        seen,
        vec![
            ("ADDED", "v1".to_string()),
            ("MODIFIED", "v2".to_string()),
            ("DELETED", "v2".to_string())
        ]
    );
}

#[tokio::test]
async fn a_runtime_watcher_with_a_field_selector_follows_one_deployment() {
    let cluster = start(Scenario::demo()).await;
    let client = cluster.client().await.unwrap();
    let deploys: Api<Deployment> = Api::namespaced(client, "production");
    let cfg = watcher::Config::default()
        .fields("metadata.name=web")
        .timeout(30);
    let mut stream = watcher(deploys.clone(), cfg).boxed();
    deploys
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 4}})),
        )
        .await
        .unwrap();
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(ev) = stream.try_next().await.unwrap() {
            let objs = match ev {
                watcher::Event::Apply(d) | watcher::Event::InitApply(d) => vec![d],
                _ => vec![],
            };
            for d in objs {
                assert_eq!(
                    d.metadata.name.as_deref(),
                    Some("web"),
                    "only web passes the selector"
                );
                if d.status.as_ref().and_then(|s| s.available_replicas) == Some(4) {
                    return true;
                }
            }
        }
        false
    })
    .await
    .expect("watcher saw web reach 4 available replicas");
    assert!(found);
}

#[tokio::test]
async fn an_update_with_a_stale_resource_version_conflicts() {
    let cluster = start(Scenario::demo()).await;
    let deploys: Api<Deployment> = Api::namespaced(cluster.client().await.unwrap(), "production");
    let stale = deploys.get("web").await.unwrap();
    let mut fresh = stale.clone();
    fresh
        .metadata
        .labels
        .get_or_insert_default()
        .insert("tier".into(), "front".into());
    deploys
        .replace("web", &PostParams::default(), &fresh)
        .await
        .unwrap();
    let mut late = stale.clone();
    late.spec.as_mut().unwrap().replicas = Some(9);
    let (code, reason, message) = api_error(
        deploys
            .replace("web", &PostParams::default(), &late)
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (409, "Conflict"));
    assert!(
        message.contains("the object has been modified"),
        "{message}"
    );
    assert_eq!(
        deploys.get("web").await.unwrap().spec.unwrap().replicas,
        Some(3)
    );
}

#[tokio::test]
async fn dry_run_validates_but_persists_nothing() {
    let cluster = start(Scenario::demo()).await;
    let client = cluster.client().await.unwrap();
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "production");
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let new: Deployment =
        serde_json::from_value(mk_deployment("production", "extra", 2, "nginx:1.25")).unwrap();
    let would_be = deploys.create(&dry, &new).await.unwrap();
    assert_eq!(
        would_be.spec.unwrap().revision_history_limit,
        Some(10),
        "defaulted"
    );
    assert!(deploys.get_opt("extra").await.unwrap().is_none());

    let before = deploys.get("web").await.unwrap().metadata.resource_version;
    let patched = deploys
        .patch(
            "web",
            &PatchParams::default().dry_run(),
            &Patch::Merge(json!({"spec": {"replicas": 8}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.spec.unwrap().replicas, Some(8));
    let after = deploys.get("web").await.unwrap();
    assert_eq!(after.metadata.resource_version, before);
    assert_eq!(after.spec.unwrap().replicas, Some(3));

    let dp = DeleteParams {
        dry_run: true,
        ..Default::default()
    };
    deploys.delete("web", &dp).await.unwrap();
    assert!(deploys.get_opt("web").await.unwrap().is_some());

    let mut bad = new.clone();
    bad.spec.as_mut().unwrap().replicas = Some(-1);
    let (code, reason, _) = api_error(deploys.create(&dry, &bad).await.unwrap_err());
    assert_eq!(
        (code, reason.as_str()),
        (422, "Invalid"),
        "dry runs still validate"
    );
}

#[tokio::test]
async fn a_field_selector_on_spec_node_name_lists_one_nodes_pods() {
    let cluster = start(Scenario::demo()).await;
    let pods: Api<Pod> = Api::all(cluster.client().await.unwrap());
    let all = pods.list(&ListParams::default()).await.unwrap().items;
    let on_node = pods
        .list(&ListParams::default().fields("spec.nodeName=node-2"))
        .await
        .unwrap()
        .items;
    assert!(!on_node.is_empty());
    assert!(on_node.len() < all.len());
    assert!(on_node
        .iter()
        .all(|p| p.spec.as_ref().unwrap().node_name.as_deref() == Some("node-2")));
    let running = pods
        .list(
            &ListParams::default()
                .fields("status.phase=Running")
                .labels("app in (web,api)"),
        )
        .await
        .unwrap()
        .items;
    assert_eq!(
        running.len(),
        3 + 2 + 2,
        "production web+api and staging web"
    );
}

#[tokio::test]
async fn eviction_is_refused_with_429_when_the_pdb_allows_no_disruption() {
    let scenario = Scenario::default()
        .with(mk_namespace("default"))
        .with(mk_node("node-1"))
        .with(mk_deployment("default", "web", 3, "nginx:1.25"))
        .with(mk_pdb(
            "default",
            "web-pdb",
            "web",
            PdbLimit::MaxUnavailable(1),
        ));
    let cluster = start(scenario).await;
    let pods: Api<Pod> = Api::default_namespaced(client_without_retries(&cluster).await);
    let names: Vec<String> = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    assert_eq!(names.len(), 3);
    pods.evict(&names[0], &EvictParams::default())
        .await
        .expect("first eviction fits the budget");
    let (code, reason, message) = api_error(
        pods.evict(&names[1], &EvictParams::default())
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (429, "TooManyRequests"));
    assert_eq!(
        message,
        "Cannot evict pod as it would violate the pod's disruption budget."
    );
    assert!(pods
        .get(&names[1])
        .await
        .unwrap()
        .metadata
        .deletion_timestamp
        .is_none());
    // Once the replacement is Ready the budget allows the next one.
    cluster.wait_settled(Duration::from_secs(10)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    pods.evict(&names[1], &EvictParams::default())
        .await
        .expect("budget recovered");
}

#[tokio::test]
async fn deleting_a_deployment_collects_its_replicasets_and_pods_unless_orphaned() {
    let cluster = start(Scenario::demo()).await;
    let client = cluster.client().await.unwrap();
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "production");
    let rss: Api<ReplicaSet> = Api::namespaced(client.clone(), "production");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "production");
    deploys
        .delete("api", &DeleteParams::default())
        .await
        .unwrap();
    deploys
        .delete("worker", &DeleteParams::orphan())
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let api_pods = pods
            .list(&ListParams::default().labels("app=api"))
            .await
            .unwrap()
            .items;
        let api_rs = rss
            .list(&ListParams::default().labels("app=api"))
            .await
            .unwrap()
            .items;
        if api_pods.is_empty() && api_rs.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "api dependents not collected"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let worker_rs = rss
        .list(&ListParams::default().labels("app=worker"))
        .await
        .unwrap()
        .items;
    assert_eq!(worker_rs.len(), 1, "orphaned ReplicaSet survives");
    assert!(worker_rs[0]
        .metadata
        .owner_references
        .as_ref()
        .is_none_or(|o| o.is_empty()));
    let worker_pods = pods
        .list(&ListParams::default().labels("app=worker"))
        .await
        .unwrap()
        .items;
    assert_eq!(worker_pods.len(), 2);
}

#[tokio::test]
async fn the_scale_subresource_speaks_autoscaling_v1() {
    let cluster = start(Scenario::demo()).await;
    let deploys: Api<Deployment> = Api::namespaced(cluster.client().await.unwrap(), "production");
    let scale = deploys.get_scale("web").await.unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(3));
    assert_eq!(scale.status.unwrap().selector.as_deref(), Some("app=web"));
    let scaled = deploys
        .patch_scale(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 1}})),
        )
        .await
        .unwrap();
    assert_eq!(scaled.spec.unwrap().replicas, Some(1));
    let (code, reason, _) = api_error(
        deploys
            .patch_scale(
                "web",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": -2}})),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (422, "Invalid"));
    let (code, reason, _) = api_error(deploys.get_scale("nope").await.unwrap_err());
    assert_eq!((code, reason.as_str()), (404, "NotFound"));
}

#[tokio::test]
async fn injected_faults_answer_503_then_clear() {
    let cluster = start(Scenario::demo()).await;
    let pods: Api<Pod> = Api::namespaced(client_without_retries(&cluster).await, "production");
    cluster.faults().add(FaultRule {
        verb: Some("get".into()),
        resource: Some("pods".into()),
        error_status: Some(503),
        probability: 1.0,
        count: Some(2),
        ..Default::default()
    });
    for _ in 0..2 {
        let (code, reason, _) = api_error(pods.get("db-0").await.unwrap_err());
        assert_eq!((code, reason.as_str()), (503, "ServiceUnavailable"));
    }
    pods.get("db-0").await.expect("count exhausted");
    cluster.faults().add(FaultRule {
        verb: Some("patch".into()),
        error_status: Some(409),
        probability: 1.0,
        ..Default::default()
    });
    let (code, reason, _) = api_error(
        pods.patch(
            "db-0",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (409, "Conflict"));
    cluster.faults().clear();
    cluster.faults().add(FaultRule {
        latency: Some(Duration::from_millis(300)),
        probability: 1.0,
        ..Default::default()
    });
    let t = std::time::Instant::now();
    pods.get("db-0").await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn errors_are_status_objects_with_real_reasons() {
    let cluster = start(Scenario::demo()).await;
    let cms: Api<ConfigMap> = Api::namespaced(cluster.client().await.unwrap(), "production");
    let (code, reason, message) = api_error(cms.get("missing").await.unwrap_err());
    assert_eq!((code, reason.as_str()), (404, "NotFound"));
    assert_eq!(message, "configmaps \"missing\" not found");
    cms.create(&PostParams::default(), &configmap("dup"))
        .await
        .unwrap();
    let (code, reason, _) = api_error(
        cms.create(&PostParams::default(), &configmap("dup"))
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (409, "AlreadyExists"));
    let (code, reason, _) = api_error(
        cms.create(&PostParams::default(), &configmap("Bad_Name"))
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (422, "Invalid"));
    let other: Api<ConfigMap> = Api::namespaced(cluster.client().await.unwrap(), "nowhere");
    let (code, _, message) = api_error(
        other
            .create(&PostParams::default(), &configmap("x"))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 404);
    assert_eq!(message, "namespaces \"nowhere\" not found");
}

#[tokio::test]
async fn a_job_runs_its_pods_to_completion() {
    use k8s_openapi::api::batch::v1::Job;
    let cluster = start(Scenario::empty()).await;
    let jobs: Api<Job> = Api::default_namespaced(cluster.client().await.unwrap());
    let job: Job = serde_json::from_value(json!({
        "metadata": {"name": "migrate"},
        "spec": {"completions": 2, "parallelism": 1, "template": {"spec": {
            "restartPolicy": "Never", "containers": [{"name": "m", "image": "busybox:1.36"}]}}}
    }))
    .unwrap();
    jobs.create(&PostParams::default(), &job).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let s = jobs
            .get("migrate")
            .await
            .unwrap()
            .status
            .unwrap_or_default();
        let complete = s
            .conditions
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Complete" && c.status == "True");
        if complete {
            assert_eq!(s.succeeded, Some(2));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job did not complete"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut always = job.clone();
    always.metadata.name = Some("bad".into());
    always
        .spec
        .as_mut()
        .unwrap()
        .template
        .spec
        .as_mut()
        .unwrap()
        .restart_policy = Some("Always".into());
    let (code, _, _) = api_error(
        jobs.create(&PostParams::default(), &always)
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 422);
}

#[tokio::test]
async fn statefulsets_scale_in_order_and_daemonsets_cover_every_node() {
    use k8s_openapi::api::apps::v1::{DaemonSet, StatefulSet};
    let cluster = start(Scenario::demo()).await;
    let client = cluster.client().await.unwrap();
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), "production");
    sts.patch_scale(
        "db",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 4}})),
    )
    .await
    .unwrap();
    cluster.wait_settled(Duration::from_secs(20)).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "production");
    let mut names: Vec<String> = pods
        .list(&ListParams::default().labels("app=db"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    names.sort();
    assert_eq!(names, ["db-0", "db-1", "db-2", "db-3"]);
    let pvcs: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
        Api::namespaced(client.clone(), "production");
    assert!(
        pvcs.get("data-db-3").await.is_ok(),
        "claims come from volumeClaimTemplates"
    );
    let s = sts.get("db").await.unwrap().status.unwrap();
    assert_eq!(s.current_revision, s.update_revision);
    let ds: Api<DaemonSet> = Api::namespaced(client.clone(), "kube-system");
    let status = ds.get("node-exporter").await.unwrap().status.unwrap();
    assert_eq!(
        (status.desired_number_scheduled, status.number_ready),
        (3, 3)
    );
}

#[tokio::test]
async fn a_watch_resumes_from_a_resource_version_without_gaps() {
    let cluster = start(Scenario::empty()).await;
    let cms: Api<ConfigMap> = Api::default_namespaced(cluster.client().await.unwrap());
    let first = cms
        .create(&PostParams::default(), &configmap("one"))
        .await
        .unwrap();
    let rv = first.metadata.resource_version.unwrap();
    cms.create(&PostParams::default(), &configmap("two"))
        .await
        .unwrap();
    cms.create(&PostParams::default(), &configmap("three"))
        .await
        .unwrap();
    // Resuming after "one" replays exactly what happened since, in order.
    let mut stream = cms
        .watch(&WatchParams::default().timeout(5), &rv)
        .await
        .unwrap()
        .boxed();
    let mut names = Vec::new();
    while names.len() < 2 {
        match stream.try_next().await.unwrap().expect("open") {
            WatchEvent::Added(c) => names.push(c.metadata.name.unwrap()),
            WatchEvent::Bookmark(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(names, ["two", "three"]);
}

/// Load figures, not a timed assertion: `cargo test --test sim_api -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "bench: prints GET latency and 1,000-pod responsiveness figures"]
async fn bench_get_latency_and_a_thousand_pods() {
    async fn get_latencies(
        pods: &Api<Pod>,
        name: &str,
        n: usize,
    ) -> (Duration, Duration, Duration) {
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            let t = std::time::Instant::now();
            pods.get(name).await.unwrap();
            v.push(t.elapsed());
        }
        v.sort();
        (
            v[n / 2],
            v[n * 99 / 100],
            v.iter().sum::<Duration>() / n as u32,
        )
    }
    let demo = start(Scenario::demo()).await;
    let pods: Api<Pod> = Api::namespaced(demo.client().await.unwrap(), "production");
    get_latencies(&pods, "db-0", 100).await;
    let (p50, p99, mean) = get_latencies(&pods, "db-0", 2000).await;
    println!("demo cluster: GET pod p50 {p50:?} p99 {p99:?} mean {mean:?}");
    demo.shutdown().await;

    let mut scenario = Scenario::default().with(mk_namespace("default"));
    for i in 1..=20 {
        scenario = scenario.with(mk_node(&format!("node-{i}")));
    }
    let scenario = scenario.with(mk_deployment("default", "big", 1000, "nginx:1.25"));
    let t = std::time::Instant::now();
    let big = start(scenario).await;
    println!(
        "1,000 pods created, scheduled and Ready in {:?} at speed {SPEED}",
        t.elapsed()
    );
    let pods: Api<Pod> = Api::default_namespaced(big.client().await.unwrap());
    let name = pods
        .list(&ListParams::default().limit(1))
        .await
        .unwrap()
        .items[0]
        .metadata
        .name
        .clone()
        .unwrap();
    let (p50, p99, mean) = get_latencies(&pods, &name, 2000).await;
    println!("1,000 pods: GET pod p50 {p50:?} p99 {p99:?} mean {mean:?}");
    let t = std::time::Instant::now();
    let n = pods.list(&ListParams::default()).await.unwrap().items.len();
    println!(
        "1,000 pods: LIST of {n} pods (with client decode) {:?}",
        t.elapsed()
    );
    println!(
        "1,000 pods: controller tick holds the lock {:?} in total",
        big.controller_tick_cost()
    );
}

#[tokio::test]
async fn a_streaming_list_watcher_gets_initial_events_and_the_end_bookmark() {
    let cluster = start(Scenario::demo()).await;
    let client = cluster.client().await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client, "production");
    let cfg = watcher::Config::default()
        .streaming_lists()
        .labels("app=web");
    let mut stream = watcher(pods.clone(), cfg).boxed();
    let mut initial = 0;
    let done = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(ev) = stream.try_next().await.unwrap() {
            match ev {
                watcher::Event::InitApply(_) => initial += 1,
                watcher::Event::InitDone => return true,
                _ => {}
            }
        }
        false
    })
    .await
    .expect("initial events end with a bookmark");
    assert!(done);
    assert_eq!(initial, 3);
}

#[tokio::test]
async fn the_kubeconfig_names_one_sim_context_pointing_at_the_server() {
    let cluster = start(Scenario::empty()).await;
    let kc = cluster.kubeconfig();
    assert_eq!(kc.current_context.as_deref(), Some("sim"));
    let server = kc.clusters[0].cluster.as_ref().unwrap().server.clone();
    assert_eq!(server.as_deref(), Some(cluster.url().as_str()));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    cluster.write_kubeconfig(&path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(&path).unwrap(),
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(config.default_namespace, "default");
    let client = kube::Client::try_from(config).unwrap();
    let v = client.apiserver_version().await.unwrap();
    assert_eq!(v.major, "1");
}

#[tokio::test]
async fn pods_of_a_deleted_node_are_collected_and_rescheduled() {
    use k8s_openapi::api::core::v1::Node;
    let cluster = start(Scenario::demo()).await;
    let client = cluster.client().await.unwrap();
    let pods: Api<Pod> = Api::all(client.clone());
    let on_node = |pods: Api<Pod>| async move {
        pods.list(&ListParams::default().fields("spec.nodeName=node-1"))
            .await
            .unwrap()
            .items
            .len()
    };
    assert!(on_node(pods.clone()).await > 0);
    Api::<Node>::all(client.clone())
        .delete("node-1", &DeleteParams::default())
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while on_node(pods.clone()).await > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "pods of node-1 still listed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster
        .wait_settled(Duration::from_secs(20))
        .await
        .expect("workloads recover on 2 nodes");
}

#[tokio::test]
async fn a_finished_job_with_a_ttl_is_deleted_with_its_pods() {
    use k8s_openapi::api::batch::v1::Job;
    let cluster = start(Scenario::empty()).await;
    let client = cluster.client().await.unwrap();
    let jobs: Api<Job> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client);
    let job = |name: &str, ttl: Option<i64>| -> Job {
        let mut spec = json!({
            "template": {"spec": {"restartPolicy": "Never",
                                  "containers": [{"name": "c", "image": "busybox:1.36"}]}},
        });
        if let Some(ttl) = ttl {
            spec["ttlSecondsAfterFinished"] = json!(ttl);
        }
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap()
    };
    jobs.create(&PostParams::default(), &job("short-lived", Some(10)))
        .await
        .unwrap();
    jobs.create(&PostParams::default(), &job("kept", None))
        .await
        .unwrap();
    let complete = |j: &Job| {
        j.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c.type_ == "Complete" && c.status == "True")
            })
    };
    // Both complete; the one with a TTL is then gone, pods and all (10 simulated seconds).
    let mut saw_complete = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match jobs.get_opt("short-lived").await.unwrap() {
            Some(j) => saw_complete |= complete(&j),
            None => break,
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the Job outlived its TTL"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(saw_complete, "deleted only after it finished");
    let kept = jobs.get("kept").await.unwrap();
    assert!(complete(&kept), "{:?}", kept.status);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = pods
            .list(&ListParams::default().labels("job-name=short-lived"))
            .await
            .unwrap();
        if left.items.is_empty() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "its pods stayed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let kept_pods = pods
        .list(&ListParams::default().labels("job-name=kept"))
        .await
        .unwrap();
    assert_eq!(
        kept_pods.items.len(),
        1,
        "a Job without a TTL keeps its pod"
    );
}
