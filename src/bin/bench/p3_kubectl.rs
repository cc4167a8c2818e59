//! P3: a `kubectl scale` process against Execute of `scale_deployment` (`wait_for_rollout:
//! false`, `wait: true`) on the same deployment, and where the executor's time goes.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use chrono::Utc;
use executor_service::api::proto::{self, executor_service_client::ExecutorServiceClient};
use serde_json::json;
use tonic::transport::Channel;

use crate::harness::{execution_with_events, mk_request, Bench, NS};
use crate::report::{ms, percentile, ratio, Row};

impl Bench {
    /// P3: `kubectl scale` processes against Execute of scale_deployment, interleaved.
    pub(crate) async fn p3(&mut self) -> anyhow::Result<()> {
        if !self.kubectl.exists() {
            // A binary built elsewhere: the checkout it runs from.
            let here = PathBuf::from("target/tools/bin/kubectl");
            if here.exists() {
                self.kubectl = here;
            }
        }
        if !self.kubectl.exists() {
            bail!(
                "kubectl not found at {} (run scripts/install-tools or pass --kubectl)",
                self.kubectl.display()
            );
        }
        let cache = self.dir.join("kube-cache");
        let kubectl_scale = |replicas: u32| {
            let mut cmd = tokio::process::Command::new(&self.kubectl);
            cmd.arg("--kubeconfig")
                .arg(&self.kubeconfig)
                .arg("--cache-dir")
                .arg(&cache)
                .args(["-n", NS, "scale", "deployment/p3"])
                .arg(format!("--replicas={replicas}"))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped());
            async move {
                let out = cmd.output().await?;
                if !out.status.success() {
                    bail!(
                        "kubectl scale failed: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
                Ok(())
            }
        };
        let mut grpc = self.grpc.clone();
        // Warm-up: kubectl's discovery cache, the executor's connections.
        kubectl_scale(2).await?;
        executor_scale(&mut grpc, 1).await?;
        let (mut kubectl, mut executor, mut ids) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..self.sizes.p3_iterations {
            let replicas = 1 + (i as u32 % 2);
            let t = Instant::now();
            kubectl_scale(replicas + 1).await?;
            kubectl.push(t.elapsed());
            let (t, sent) = (Instant::now(), Utc::now());
            let id = executor_scale(&mut grpc, replicas).await?;
            executor.push(t.elapsed());
            ids.push((id, sent, Utc::now()));
        }
        let phases = self.p3_phases(&ids).await?;
        kubectl.sort();
        executor.sort();
        for (label, p) in [("p50", 0.50), ("p99", 0.99)] {
            let (e, k) = (percentile(&executor, p), percentile(&kubectl, p));
            let faster = ratio(k, e);
            self.rows.push(
                Row::new("P3", format!("scale per action {label}"))
                    .executor(ms(e))
                    .baseline(format!("{} (kubectl)", ms(k)))
                    .ratio(format!("{faster:.1}× faster"))
                    .target("≥ 50× faster", faster >= 50.0),
            );
        }
        self.notes.push(format!(
            "P3: {} actions each side, interleaved on one deployment. kubectl: one `kubectl scale \
             deployment/p3 --replicas=N` process (warm discovery cache), spawn to exit. \
             Executor: Execute with `wait: true` and `wait_for_rollout: false`, i.e. until \
             the execution is SUCCEEDED. Where an execution's time goes (medians, from its \
             recorded timestamps): {phases}.",
            self.sizes.p3_iterations
        ));
        Ok(())
    }

    /// Medians of the steps of P3's executions, from the client's clock (same machine) and the
    /// timestamps the engine recorded: sent → accepted (`created_at`, after the plan and the
    /// policy) → RUNNING → SUCCEEDED → response received.
    async fn p3_phases(
        &self,
        ids: &[(String, chrono::DateTime<Utc>, chrono::DateTime<Utc>)],
    ) -> anyhow::Result<String> {
        let mut grpc = self.grpc.clone();
        let mut steps: [Vec<Duration>; 4] = Default::default();
        let micros = |t: Option<prost_types::Timestamp>| {
            t.map_or(0, |t| t.seconds * 1_000_000 + i64::from(t.nanos) / 1_000)
        };
        for (id, sent, received) in ids {
            let (execution, events) = execution_with_events(&mut grpc, id).await?;
            let created = micros(execution.created_at);
            let at = |state: proto::ExecutionState| {
                events
                    .iter()
                    .find(|e| e.state == state as i32)
                    .map(|e| micros(e.timestamp))
            };
            let (Some(running), Some(done)) = (
                at(proto::ExecutionState::Running),
                at(proto::ExecutionState::Succeeded),
            ) else {
                continue;
            };
            let (sent, received) = (sent.timestamp_micros(), received.timestamp_micros());
            for (k, (a, b)) in [
                (sent, created),
                (created, running),
                (running, done),
                (done, received),
            ]
            .into_iter()
            .enumerate()
            {
                steps[k].push(Duration::from_micros((b - a).max(0) as u64));
            }
        }
        for s in &mut steps {
            s.sort();
        }
        Ok(format!(
            "sent → accepted {} (RPC, validation, plan: GET + dry-run PATCH, policy), \
             accepted → RUNNING {} (stored with its QUEUED event in one transaction, worker), \
             RUNNING → SUCCEEDED {} (GET + PATCH), SUCCEEDED → response {} (the terminal \
             event made durable, the reply)",
            ms(percentile(&steps[0], 0.5)),
            ms(percentile(&steps[1], 0.5)),
            ms(percentile(&steps[2], 0.5)),
            ms(percentile(&steps[3], 0.5)),
        ))
    }
}

/// scale_deployment of deployment/p3 through the executor, until it is SUCCEEDED.
async fn executor_scale(
    grpc: &mut ExecutorServiceClient<Channel>,
    replicas: u32,
) -> anyhow::Result<String> {
    let mut request = mk_request(
        "scale_deployment",
        NS,
        "Deployment",
        "p3",
        json!({"replicas": replicas, "wait_for_rollout": false}),
    );
    request.wait = true;
    let execution = grpc
        .execute(request)
        .await?
        .into_inner()
        .execution
        .ok_or_else(|| anyhow!("no execution"))?;
    if execution.state != proto::ExecutionState::Succeeded as i32 {
        bail!(
            "scale ended in state {}: {}",
            execution.state,
            execution.message
        );
    }
    Ok(execution.id)
}
