//! P1: sequential `restart_pod` latency through the executor (Execute, then WatchExecution to
//! the terminal event) against the same Kubernetes API calls made directly with kube-rs.
//! P2 reuses both restarts.

use std::collections::BTreeSet;
use std::time::Instant;

use anyhow::{anyhow, bail};
use executor_service::api::proto::{self, executor_service_client::ExecutorServiceClient};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    api::{Api, DeleteParams, ListParams, Preconditions},
    runtime::{watcher, WatchStreamExt},
};
use serde_json::json;
use tonic::transport::Channel;

use crate::harness::{mk_request, p1_targets, Bench, NS};
use crate::report::{ms, percentile, ratio, Row};

impl Bench {
    /// P1: sequential restart_pod latency, executor and direct calls interleaved.
    pub(crate) async fn p1(&mut self) -> anyhow::Result<()> {
        let [a, b] = p1_targets();
        let mut pod_a = self.pod_of(&a).await?;
        let mut pod_b = self.pod_of(&b).await?;
        let mut grpc = self.grpc.clone();
        // Warm both paths (connections, the policy's first evaluation).
        pod_a = executor_restart(&mut grpc, &pod_a).await?;
        pod_b = direct_restart(&self.kube, &pod_b).await?;
        let (mut executor, mut direct) = (Vec::new(), Vec::new());
        for _ in 0..self.sizes.p1_iterations {
            let t = Instant::now();
            pod_a = executor_restart(&mut grpc, &pod_a).await?;
            executor.push(t.elapsed());
            let t = Instant::now();
            pod_b = direct_restart(&self.kube, &pod_b).await?;
            direct.push(t.elapsed());
        }
        executor.sort();
        direct.sort();
        for (label, p) in [("p50", 0.50), ("p99", 0.99)] {
            let (e, d) = (percentile(&executor, p), percentile(&direct, p));
            let ratio = ratio(e, d);
            self.rows.push(
                Row::new("P1", format!("restart_pod latency {label}"))
                    .executor(ms(e))
                    .baseline(ms(d))
                    .ratio(format!("{ratio:.2}×"))
                    .target("≤ 1.2×", ratio <= 1.2),
            );
        }
        self.notes.push(format!(
            "P1: {} sequential restarts each side, interleaved. Executor: Execute, then \
             WatchExecution until the terminal event. Direct: the executor's own API calls with \
             kube-rs — get + dry-run delete (the admission plan), get, list by labels, watch, \
             delete with a uid precondition, wait for the replacement pod. `wait_ready: false`: \
             both wait for the ReplicaSet controller's replacement, not for the kubelet.",
            self.sizes.p1_iterations
        ));
        Ok(())
    }
}

/// restart_pod through the executor: Execute, then WatchExecution to the terminal event.
/// Returns the replacement pod.
pub(crate) async fn executor_restart(
    grpc: &mut ExecutorServiceClient<Channel>,
    pod: &str,
) -> anyhow::Result<String> {
    let execution = grpc
        .execute(mk_request(
            "restart_pod",
            NS,
            "Pod",
            pod,
            json!({"wait_ready": false}),
        ))
        .await?
        .into_inner()
        .execution
        .ok_or_else(|| anyhow!("no execution"))?;
    let mut stream = grpc
        .watch_execution(proto::WatchExecutionRequest {
            execution_id: execution.id,
            from_sequence: 0,
        })
        .await?
        .into_inner();
    let mut last = None;
    while let Some(message) = stream.message().await? {
        last = message.event;
    }
    let last = last.ok_or_else(|| anyhow!("no events"))?;
    if last.state != proto::ExecutionState::Succeeded as i32 {
        bail!(
            "restart of {pod} ended in state {}: {}",
            last.state,
            last.message
        );
    }
    match last
        .details
        .and_then(|d| d.fields.get("replacement_pod").cloned())
        .and_then(|v| v.kind)
    {
        Some(prost_types::value::Kind::StringValue(name)) => Ok(name),
        _ => bail!("restart of {pod}: no replacement_pod in the terminal event"),
    }
}

/// restart_pod done directly: the executor's API calls (plan, then execution) with kube-rs.
/// Returns the replacement pod.
pub(crate) async fn direct_restart(client: &kube::Client, name: &str) -> anyhow::Result<String> {
    let api: Api<Pod> = Api::namespaced(client.clone(), NS);
    let delete = |pod: &Pod, dry_run: bool| DeleteParams {
        dry_run,
        preconditions: Some(Preconditions {
            uid: pod.metadata.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    // What admission does: look, and let the API server check the delete.
    let pod = api.get(name).await?;
    api.delete(name, &delete(&pod, true)).await?;
    // What the execution does.
    let pod = api.get(name).await?;
    let owner = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.clone())
        .ok_or_else(|| anyhow!("pod {name} has no controller"))?;
    let selector: Vec<String> = pod
        .metadata
        .labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let selector = selector.join(",");
    let existing: BTreeSet<String> = api
        .list(&ListParams::default().labels(&selector))
        .await?
        .items
        .into_iter()
        .filter_map(|p| p.metadata.uid)
        .collect();
    let mut pods = watcher(api.clone(), watcher::Config::default().labels(&selector))
        .default_backoff()
        .applied_objects()
        .boxed();
    api.delete(name, &delete(&pod, false)).await?;
    let old_uid = pod.metadata.uid.unwrap_or_default();
    while let Some(candidate) = pods.next().await {
        let Ok(candidate) = candidate else { continue };
        let uid = candidate.metadata.uid.clone().unwrap_or_default();
        let owned = candidate
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.controller == Some(true) && o.uid == owner);
        if owned
            && uid != old_uid
            && !existing.contains(&uid)
            && candidate.metadata.deletion_timestamp.is_none()
        {
            return Ok(candidate.metadata.name.unwrap_or_default());
        }
    }
    bail!("pod watch ended")
}
