//! The actions on any kind (issue 16): `apply_manifest` of a custom resource (the CSI
//! snapshot CRD's VolumeSnapshot) and a Deployment with its diff in DryRun, a failure part-way
//! rolled back to the previous objects; `patch_resource` and `delete_resource` on any kind and
//! their refusals; the built-in policy keeping them off Secrets. Judged from the cluster.

mod common;

use std::time::Duration;

use common::{mk_request, mk_target, Harness};
use executor_service::{
    api::proto::{ApproveExecutionRequest, DryRunRequest, ExecutionState},
    engine::EngineConfig,
    policy::{Policy, PolicyConfig},
    sim::{FaultRule, Scenario},
};
use k8s_openapi::api::{apps::v1::Deployment, core::v1::ConfigMap};
use kube::{
    api::{ApiResource, DynamicObject, GroupVersionKind},
    Api,
};
use serde_json::json;
use tonic::Code;

const MANIFEST: &str = "\
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshot
metadata:
  name: before-upgrade
spec:
  source:
    persistentVolumeClaimName: data-db-0
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 3
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx:1.27
";

fn image(d: &Deployment) -> String {
    d.spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .image
        .clone()
        .unwrap_or_default()
}

fn snapshots(kube: &kube::Client) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "snapshot.storage.k8s.io",
        "v1",
        "VolumeSnapshot",
    ));
    Api::namespaced_with(kube.clone(), "production", &resource)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_manifest_diffs_applies_and_rolls_back_a_custom_resource_and_a_deployment() {
    let h = Harness::start(
        EngineConfig {
            // Every run waits for an approval: faults go in between admission and the run.
            require_approval: true,
            ..EngineConfig::default()
        },
        Scenario::demo(),
    )
    .await;
    h.sim.wait_settled(Duration::from_secs(30)).await.unwrap();
    let mut client = h.grpc().await;
    let deployments = Api::<Deployment>::namespaced(h.kube.clone(), "production");
    let target = mk_target("", "Namespace", "production");
    let params = json!({"manifests": {"upgrade.yaml": MANIFEST}});

    let bad = client
        .execute(mk_request(
            "apply_manifest",
            target.clone(),
            json!({"manifests": {"x.yaml": "kind: Nope\nmetadata: {name: x}\n"}}),
        ))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument, "{}", bad.message());
    assert!(
        bad.message().starts_with("parameters.manifests"),
        "{}",
        bad.message()
    );

    let plan = client
        .dry_run(DryRunRequest {
            action: "apply_manifest".into(),
            target: target.clone(),
            parameters: Some(common::to_struct(&params)),
            alert: None,
        })
        .await
        .unwrap()
        .into_inner();
    let objects: Vec<&str> = plan.changes.iter().map(|c| c.object.as_str()).collect();
    assert_eq!(
        objects,
        [
            "production/volumesnapshot/before-upgrade",
            "production/deployment/web"
        ]
    );
    assert!(
        format!("{:?}", plan.changes[1].patch).contains("nginx:1.27"),
        "{plan:?}"
    );
    assert_eq!(
        image(&deployments.get("web").await.unwrap()),
        "nginx:1.25",
        "a dry run changes nothing"
    );

    // A run that fails part-way: the snapshot's apply is refused after the Deployment's went
    // through, so the Deployment is put back as it was.
    let reversed = json!({"manifests": {"a.yaml": MANIFEST.split("---\n").nth(1).unwrap(), "b.yaml": MANIFEST.split("---\n").next().unwrap()}});
    let failing = client
        .execute(mk_request("apply_manifest", target.clone(), reversed))
        .await
        .unwrap()
        .into_inner()
        .execution
        .unwrap();
    h.sim.faults().add(FaultRule {
        verb: Some("patch".into()),
        resource: Some("volumesnapshots".into()),
        latency: None,
        error_status: Some(403),
        probability: 1.0,
        count: Some(1),
    });
    client
        .approve_execution(ApproveExecutionRequest {
            execution_id: failing.id.clone(),
            approver: "ops".into(),
            reason: String::new(),
        })
        .await
        .unwrap();
    let done = h.engine.wait(&failing.id).await.unwrap();
    assert_eq!(
        done.state,
        executor_service::domain::ExecutionState::RolledBack,
        "{}",
        done.message
    );
    assert_eq!(
        image(&deployments.get("web").await.unwrap()),
        "nginx:1.25",
        "the Deployment is back"
    );
    assert!(snapshots(&h.kube)
        .get_opt("before-upgrade")
        .await
        .unwrap()
        .is_none());

    // The same manifests without a fault: both applied.
    let applied = client
        .execute(mk_request("apply_manifest", target.clone(), params.clone()))
        .await
        .unwrap()
        .into_inner()
        .execution
        .unwrap();
    client
        .approve_execution(ApproveExecutionRequest {
            execution_id: applied.id.clone(),
            approver: "ops".into(),
            reason: String::new(),
        })
        .await
        .unwrap();
    let done = h.engine.wait(&applied.id).await.unwrap();
    assert_eq!(
        done.state,
        executor_service::domain::ExecutionState::Succeeded,
        "{}",
        done.message
    );
    assert_eq!(image(&deployments.get("web").await.unwrap()), "nginx:1.27");
    let snapshot = snapshots(&h.kube).get("before-upgrade").await.unwrap();
    assert_eq!(
        snapshot.data["spec"]["source"]["persistentVolumeClaimName"],
        "data-db-0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_and_delete_work_on_any_kind_and_the_policy_keeps_them_off_secrets() {
    // With the service's own credentials: under its own account the API server already
    // refuses (`secrets_are_out_of_reach_of_the_any_kind_actions_own_accounts`); here the
    // policy must refuse by itself.
    let h = Harness::start_as_configured(
        EngineConfig {
            policy: Some(std::sync::Arc::new(
                Policy::builtin(&PolicyConfig::default()).unwrap(),
            )),
            ..EngineConfig::default()
        },
        Scenario::demo(),
    )
    .await;
    let mut client = h.grpc().await;
    let configmaps = Api::<ConfigMap>::namespaced(h.kube.clone(), "production");

    for (target, params, code, field) in [
        (
            mk_target("production", "", "api-config"),
            json!({"patch": "{}"}),
            Code::InvalidArgument,
            "target.kind",
        ),
        (
            mk_target("production", "Gizmo", "x"),
            json!({"patch": "{}"}),
            Code::InvalidArgument,
            "target.kind",
        ),
        (
            mk_target("production", "ConfigMap", "api-config"),
            json!({"patch": "[1"}),
            Code::InvalidArgument,
            "parameters.patch",
        ),
        (
            mk_target("production", "ConfigMap", "api-config"),
            json!({"patch": "{}", "patch_type": "json"}),
            Code::InvalidArgument,
            "parameters.patch",
        ),
    ] {
        let err = client
            .execute(mk_request("patch_resource", target, params))
            .await
            .unwrap_err();
        assert_eq!(err.code(), code, "{}", err.message());
        assert!(err.message().starts_with(field), "{}", err.message());
    }
    let denied = client
        .execute(mk_request(
            "patch_resource",
            mk_target("production", "Secret", "api-credentials"),
            json!({"patch": "{\"data\": {}}"}),
        ))
        .await
        .unwrap_err();
    assert_eq!(
        denied.code(),
        Code::PermissionDenied,
        "{}",
        denied.message()
    );
    assert!(
        denied.message().contains("does not change secret objects"),
        "{}",
        denied.message()
    );

    // High risk: the built-in policy holds both for an approval.
    for (action, target, params) in [
        (
            "patch_resource",
            mk_target("production", "configmaps", "api-config"),
            json!({"patch": "{\"data\": {\"LOG_LEVEL\": \"debug\"}}"}),
        ),
        (
            "delete_resource",
            mk_target("production", "ConfigMap", "api-config"),
            json!({}),
        ),
    ] {
        let x = client
            .execute(mk_request(action, target, params))
            .await
            .unwrap()
            .into_inner()
            .execution
            .unwrap();
        assert_eq!(x.state, ExecutionState::WaitingApproval as i32, "{action}");
        client
            .approve_execution(ApproveExecutionRequest {
                execution_id: x.id.clone(),
                approver: "ops".into(),
                reason: String::new(),
            })
            .await
            .unwrap();
        let done = h.engine.wait(&x.id).await.unwrap();
        assert_eq!(
            done.state,
            executor_service::domain::ExecutionState::Succeeded,
            "{action}: {}",
            done.message
        );
        if action == "patch_resource" {
            let cm = configmaps.get("api-config").await.unwrap();
            assert_eq!(cm.data.unwrap()["LOG_LEVEL"], "debug");
        }
    }
    assert!(
        configmaps.get_opt("api-config").await.unwrap().is_none(),
        "deleted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_job_runs_a_template_with_its_environment_reports_logs_and_cancelling_deletes_it() {
    use k8s_openapi::api::batch::v1::Job;
    let h = Harness::demo().await;
    let mut client = h.grpc().await;
    let templates: ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "executor-job-templates", "namespace": "staging"},
        "data": {
            "report": "image: busybox:1.36.1\ncommand: [sh, -c, 'echo report for $TARGET']\nserviceAccount: default\nttlSecondsAfterFinished: 600\n",
            "broken": "image: example/tool:crashloop\n",
            "stuck": "image: example/tool:badimage\n",
        },
    }))
    .unwrap();
    Api::<ConfigMap>::namespaced(h.kube.clone(), "staging")
        .create(&Default::default(), &templates)
        .await
        .unwrap();
    let jobs = Api::<Job>::namespaced(h.kube.clone(), "staging");
    let target = mk_target("", "Namespace", "staging");

    let err = client
        .execute(mk_request(
            "run_job",
            target.clone(),
            json!({"template": "nope"}),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert!(
        err.message().starts_with("parameters.template") && err.message().contains("report"),
        "{}",
        err.message()
    );

    // Found by the fuzzer: a name with control characters went into a request path (503).
    for (params, field) in [
        (
            json!({"template": "report", "templates_config_map": "web\u{1a}\u{2}"}),
            "parameters.templates_config_map",
        ),
        (json!({"template": "re port"}), "parameters.template"),
    ] {
        let err = client
            .execute(mk_request("run_job", target.clone(), params))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
        assert!(err.message().starts_with(field), "{}", err.message());
    }

    let done = common::run_to_end(
        &mut client,
        "run_job",
        target.clone(),
        json!({"template": "report", "env": {"TARGET": "web"}}),
    )
    .await;
    assert_eq!(
        done.state,
        ExecutionState::Succeeded as i32,
        "{}",
        done.message
    );
    let result = common::struct_to_json(done.result.as_ref().unwrap());
    let job =
        serde_json::to_value(jobs.get(result["job"].as_str().unwrap()).await.unwrap()).unwrap();
    assert_eq!(job["status"]["succeeded"], 1, "{job}");
    assert_eq!(job["spec"]["ttlSecondsAfterFinished"], 600);
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "default");
    assert_eq!(
        pod["containers"][0]["env"],
        json!([{"name": "TARGET", "value": "web"}])
    );
    assert!(
        !result["last_lines"].as_array().unwrap().is_empty(),
        "{result}"
    );

    let failed = common::run_to_end(
        &mut client,
        "run_job",
        target.clone(),
        json!({"template": "broken"}),
    )
    .await;
    assert_eq!(
        failed.state,
        ExecutionState::Failed as i32,
        "{}",
        failed.message
    );
    assert!(
        failed.message.contains("failed") && failed.message.contains("FATAL"),
        "{}",
        failed.message
    );

    // A Job that never ends: cancelling the execution deletes it.
    let stuck = client
        .execute(mk_request("run_job", target, json!({"template": "stuck"})))
        .await
        .unwrap()
        .into_inner()
        .execution
        .unwrap();
    let stuck_job = || async {
        jobs.list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .find(|j| {
                j.metadata
                    .name
                    .as_deref()
                    .unwrap_or_default()
                    .starts_with("job-stuck-")
            })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while stuck_job().await.is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the Job never appeared"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    client
        .cancel_execution(executor_service::api::proto::CancelExecutionRequest {
            execution_id: stuck.id.clone(),
            reason: "taking too long".into(),
        })
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while let Some(job) = stuck_job().await {
        assert!(
            std::time::Instant::now() < deadline,
            "the Job was not deleted: {job:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_out_of_reach_of_the_any_kind_actions_own_accounts() {
    // No policy at all: the generated role alone keeps patch_resource off Secrets.
    let h = Harness::demo().await;
    let mut client = h.grpc().await;
    let denied = client
        .execute(mk_request(
            "patch_resource",
            mk_target("production", "Secret", "api-credentials"),
            json!({"patch": "{\"data\": {}}"}),
        ))
        .await
        .unwrap_err();
    assert_eq!(
        denied.code(),
        Code::PermissionDenied,
        "{}",
        denied.message()
    );
    assert!(
        denied.message().contains(
            "User \"system:serviceaccount:executor-service:action-patch-resource\" cannot get resource \"secrets\""
        ),
        "{}",
        denied.message()
    );
    let secret =
        Api::<k8s_openapi::api::core::v1::Secret>::namespaced(h.kube.clone(), "production")
            .get("api-credentials")
            .await
            .unwrap();
    assert!(
        secret.data.is_some_and(|d| !d.is_empty()),
        "the Secret is untouched"
    );
}
