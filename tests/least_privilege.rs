//! Least privilege, proved (issue 16): each action runs as its own ServiceAccount by
//! impersonation, with only the role generated from what its code calls; the same action under
//! a role missing one rule fails with the API server's 403 in its events; and the service
//! itself, authenticated with its own token and holding only `deploy/rbac.yaml`, can change
//! nothing but through the actions' accounts. (Every other test of an action runs under its
//! generated role too: `common::Harness` sets it up.)

mod common;

use std::{io::Write as _, path::Path, process::Command, time::Duration};

use common::{mk_target, run_to_end, tool, Harness, ServeProcess};
use executor_service::{
    api::proto::{
        executor_service_client::ExecutorServiceClient, ApproveExecutionRequest, ExecutionState,
    },
    engine::EngineConfig,
    sim::{Scenario, SimCluster, SimConfig},
};
use k8s_openapi::api::{
    apps::v1::Deployment, authorization::v1::SelfSubjectAccessReview, core::v1::ServiceAccount,
    rbac::v1::ClusterRole,
};
use kube::{
    api::{Patch, PatchParams, PostParams},
    Api,
};
use serde_json::{json, Value};

const SCALER: &str = "system:serviceaccount:executor-service:action-scale-deployment";

async fn replicas(kube: &kube::Client) -> i32 {
    Api::<Deployment>::namespaced(kube.clone(), "production")
        .get("web")
        .await
        .unwrap()
        .spec
        .unwrap()
        .replicas
        .unwrap()
}

/// Submits a scale of production/web to `to`; with every change held for approval, it waits.
async fn submit_scale(
    grpc: &mut ExecutorServiceClient<tonic::transport::Channel>,
    to: i64,
) -> Result<String, tonic::Status> {
    let request = common::mk_request(
        "scale_deployment",
        mk_target("production", "Deployment", "web"),
        json!({ "replicas": to }),
    );
    let execution = grpc.execute(request).await?.into_inner().execution.unwrap();
    assert_eq!(execution.state(), ExecutionState::WaitingApproval);
    Ok(execution.id)
}

async fn approve(grpc: &mut ExecutorServiceClient<tonic::transport::Channel>, id: &str) {
    grpc.approve_execution(ApproveExecutionRequest {
        execution_id: id.into(),
        approver: "oncall".into(),
        reason: String::new(),
    })
    .await
    .expect("approve");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_action_runs_as_its_own_account_and_fails_with_the_403_when_its_role_lacks_a_rule() {
    // Every change waits for an approval: a window to take a rule away after admission.
    let config = EngineConfig {
        require_approval: true,
        ..EngineConfig::default()
    };
    let h = Harness::start(config, Scenario::demo()).await;
    let mut grpc = h.grpc().await;
    let id = submit_scale(&mut grpc, 4).await.unwrap();
    approve(&mut grpc, &id).await;
    let done = common::until_state(
        &mut grpc,
        &id,
        &[ExecutionState::Succeeded, ExecutionState::Failed],
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(done.state(), ExecutionState::Succeeded, "{}", done.message);
    assert_eq!(replicas(&h.kube).await, 4);
    // The cluster's record: the scale was written by the action's own account.
    let writes = h.sim.writes().on("deployments/scale", "production", "web");
    let applied: Vec<_> = writes
        .iter()
        .filter(|w| w.applied() && !w.dry_run)
        .collect();
    assert!(!applied.is_empty(), "{writes:?}");
    assert!(applied.iter().all(|w| w.user == SCALER), "{applied:?}");

    // Admitted with the full role (its plan's dry run passed), then one rule is taken away:
    // patching the scale subresource.
    let waiting = submit_scale(&mut grpc, 2).await.unwrap();
    let roles = Api::<ClusterRole>::all(h.kube.clone());
    let role = roles
        .get("executor-service-action-scale-deployment")
        .await
        .unwrap();
    let mut rules = serde_json::to_value(role.rules.unwrap()).unwrap();
    let before = rules.as_array().unwrap().len();
    rules.as_array_mut().unwrap().retain(|r| {
        !r["resources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x == "deployments/scale")
    });
    assert_eq!(rules.as_array().unwrap().len(), before - 1);
    roles
        .patch(
            "executor-service-action-scale-deployment",
            &PatchParams::default(),
            &Patch::Merge(json!({ "rules": rules })),
        )
        .await
        .unwrap();
    approve(&mut grpc, &waiting).await;
    let failed = common::until_state(
        &mut grpc,
        &waiting,
        &[ExecutionState::Succeeded, ExecutionState::Failed],
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(failed.state(), ExecutionState::Failed, "{}", failed.message);
    let forbidden = format!(
        "deployments.apps \"web\" is forbidden: User \"{SCALER}\" cannot patch resource \"deployments/scale\" in API group \"apps\" in the namespace \"production\""
    );
    let events = common::watch_all(&mut grpc, &waiting, 0).await;
    assert!(
        events.iter().any(|e| e.message.contains(&forbidden)),
        "no event names the 403: {:?}",
        events.iter().map(|e| &e.message).collect::<Vec<_>>()
    );
    assert_eq!(replicas(&h.kube).await, 4, "nothing changed");
    // A new request is refused while planning (its dry run needs the same verb), naming it.
    let refused = submit_scale(&mut grpc, 3).await.expect_err("refused");
    assert!(refused.message().contains(&forbidden), "{refused:?}");
    assert_eq!(replicas(&h.kube).await, 4);
}

fn kubectl(kubeconfig: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(tool("kubectl"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .expect("run kubectl");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn apply_file(kubeconfig: &Path, file: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(file);
    let (ok, out) = kubectl(kubeconfig, &["apply", "-f", path.to_str().unwrap()]);
    assert!(ok, "kubectl apply -f deploy/{file}: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_with_only_its_own_role_changes_the_cluster_only_through_the_actions_accounts()
{
    let sim = SimCluster::start(SimConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        scenario: Scenario::demo(),
        speed: common::TEST_SPEED,
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let admin = dir.path().join("admin.kubeconfig");
    sim.write_kubeconfig(&admin).unwrap();
    // deploy/ as an operator installs it: namespace, account, the service's role, the actions'
    // accounts and roles, the CRD.
    tokio::task::spawn_blocking({
        let admin = admin.clone();
        move || {
            for file in [
                "namespace.yaml",
                "serviceaccount.yaml",
                "rbac.yaml",
                "rbac-actions.yaml",
                "crd.yaml",
            ] {
                apply_file(&admin, file);
            }
        }
    })
    .await
    .unwrap();
    // The service's own token, as `kubectl create token` asks for it (a TokenRequest; kubectl
    // itself sends that one as protobuf, which the simulated cluster does not speak).
    let accounts =
        Api::<ServiceAccount>::namespaced(sim.client().await.unwrap(), "executor-service");
    let token = accounts
        .create_token_request(
            "executor-service",
            &PostParams::default(),
            &serde_json::from_value(json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"audiences": []}})).unwrap(),
        )
        .await
        .expect("a token for the service's account")
        .status
        .expect("a token")
        .token;
    let mut config: Value =
        serde_yaml::from_str(&std::fs::read_to_string(&admin).unwrap()).unwrap();
    config["users"][0]["user"] = json!({ "token": token });
    let service_kubeconfig = dir.path().join("service.kubeconfig");
    std::fs::File::create(&service_kubeconfig)
        .unwrap()
        .write_all(serde_yaml::to_string(&config).unwrap().as_bytes())
        .unwrap();
    // What the service's token may do by itself, as the API server answers a
    // SelfSubjectAccessReview (what `kubectl auth can-i` sends).
    let service = common::kube_client_from(&service_kubeconfig).await;
    let reviews = Api::<SelfSubjectAccessReview>::all(service);
    for (verb, group, resource, sub, namespace, expected) in [
        ("patch", "apps", "deployments", "scale", "production", false),
        ("patch", "apps", "deployments", "", "production", false),
        ("delete", "", "pods", "", "production", false),
        ("get", "", "secrets", "", "production", false),
        (
            "watch",
            "executor-service.io",
            "kubernetesexecutions",
            "",
            "",
            true,
        ),
        (
            "patch",
            "executor-service.io",
            "kubernetesexecutions",
            "status",
            "staging",
            true,
        ),
    ] {
        let review: SelfSubjectAccessReview = serde_json::from_value(json!({
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": {
                "verb": verb, "group": group, "resource": resource,
                "subresource": sub, "namespace": namespace,
            }},
        }))
        .unwrap();
        let answer = reviews
            .create(&PostParams::default(), &review)
            .await
            .expect("an access review");
        assert_eq!(
            answer.status.map(|s| s.allowed),
            Some(expected),
            "{verb} {group}/{resource}/{sub} in {namespace:?}"
        );
    }
    let store = dir.path().join("history.db");
    // Without action identities, the service's own role cannot scale anything.
    {
        let serve = ServeProcess::on_cluster(&service_kubeconfig, &store, &[]);
        let mut grpc = ExecutorServiceClient::connect(format!("http://{}", serve.addr))
            .await
            .unwrap();
        let mut request = common::mk_request(
            "scale_deployment",
            mk_target("production", "Deployment", "web"),
            json!({"replicas": 5}),
        );
        request.wait = true;
        let refused = match grpc.execute(request).await {
            Ok(r) => r.into_inner().execution.unwrap().message,
            Err(status) => status.message().to_string(),
        };
        assert!(
            refused.contains(
                "User \"system:serviceaccount:executor-service:executor-service\" cannot"
            ),
            "{refused}"
        );
    }
    // With them, every action runs as its own account.
    let serve = ServeProcess::on_cluster(
        &service_kubeconfig,
        &store,
        &["--action-identities", "executor-service"],
    );
    let mut grpc = ExecutorServiceClient::connect(format!("http://{}", serve.addr))
        .await
        .unwrap();
    let kube = sim.client().await.unwrap();
    for (action, kind, name, params) in [
        (
            "scale_deployment",
            "Deployment",
            "web",
            json!({"replicas": 5}),
        ),
        ("rolling_restart_deployment", "Deployment", "api", json!({})),
        ("cordon_node", "Node", "node-3", json!({})),
        ("uncordon_node", "Node", "node-3", json!({})),
    ] {
        let namespace = if kind == "Node" { "" } else { "production" };
        let done = tokio::time::timeout(
            Duration::from_secs(120),
            run_to_end(&mut grpc, action, mk_target(namespace, kind, name), params),
        )
        .await
        .expect("in time");
        assert_eq!(
            done.state(),
            ExecutionState::Succeeded,
            "{action}: {}",
            done.message
        );
    }
    assert_eq!(replicas(&kube).await, 5);
    let by: Vec<(String, String)> = sim
        .writes()
        .all()
        .into_iter()
        .filter(|w| w.applied() && !w.dry_run)
        .filter(|w| w.resource.starts_with("deployments") || w.resource == "nodes")
        .map(|w| (w.resource.clone(), w.user.clone()))
        .collect();
    assert!(
        by.iter()
            .any(|(r, u)| r == "deployments/scale" && u == SCALER),
        "{by:?}"
    );
    assert!(
        by.iter().any(|(r, u)| r == "nodes"
            && u == "system:serviceaccount:executor-service:action-cordon-node"),
        "{by:?}"
    );
    assert!(
        by.iter().all(
            |(_, u)| u.starts_with("system:serviceaccount:executor-service:action-")
                || u == "admin"
        ),
        "a write by the service's own account: {by:?}"
    );
    drop(serve);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_action_identities_on_its_embedded_cluster_runs_each_action_as_its_account() {
    let serve = ServeProcess::start(&["--action-identities", "executor-service"]);
    let mut grpc = ExecutorServiceClient::connect(format!("http://{}", serve.addr))
        .await
        .unwrap();
    for (action, kind, name, params) in [
        (
            "scale_deployment",
            "Deployment",
            "web",
            json!({"replicas": 4}),
        ),
        ("rolling_restart_deployment", "Deployment", "api", json!({})),
    ] {
        let done = run_to_end(
            &mut grpc,
            action,
            mk_target("production", kind, name),
            params,
        )
        .await;
        assert_eq!(
            done.state(),
            ExecutionState::Succeeded,
            "{action}: {}",
            done.message
        );
    }
    let record = common::sim_writes(&common::sim_url(&serve.kubeconfig)).await;
    let applied = common::applied_writes(&record);
    let by = |resource: &str| -> Vec<String> {
        applied
            .iter()
            .filter(|w| w["resource"] == resource)
            .map(|w| w["user"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    assert!(!by("deployments/scale").is_empty());
    assert!(
        by("deployments/scale").iter().all(|u| u == SCALER),
        "{record}"
    );
    let restarts = by("deployments");
    assert!(!restarts.is_empty());
    assert!(
        restarts.iter().all(
            |u| u == "system:serviceaccount:executor-service:action-rolling-restart-deployment"
        ),
        "{record}"
    );
}
