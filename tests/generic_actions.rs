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
    let run = |client: &mut executor_service::api::proto::executor_service_client::ExecutorServiceClient<tonic::transport::Channel>| {
        let request = mk_request("apply_manifest", target.clone(), params.clone());
        let mut client = client.clone();
        async move { client.execute(request).await.unwrap().into_inner().execution.unwrap() }
    };
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
    let applied = run(&mut client).await;
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
    assert_eq!(ExecutionState::Succeeded as i32, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_and_delete_work_on_any_kind_and_the_policy_keeps_them_off_secrets() {
    let h = Harness::start(
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
