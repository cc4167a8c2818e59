//! P2: restart_pod executions per second at 1, 16 and 64 concurrent clients, each on its own
//! deployment, through the executor and directly (P1's two restarts).

use std::time::Instant;

use crate::harness::{Bench, P2_LEVELS};
use crate::p1_latency::{direct_restart, executor_restart};
use crate::report::Row;

impl Bench {
    /// P2: executions per second at each concurrency, each client restarting the pod of its
    /// own deployment for a fixed time.
    pub(crate) async fn p2(&mut self) -> anyhow::Result<()> {
        for &clients in &P2_LEVELS {
            let executor = self.p2_run(clients, true).await?;
            let direct = self.p2_run(clients, false).await?;
            let ratio = executor / direct;
            self.rows.push(
                Row::new("P2", format!("restart_pod throughput, {clients} clients"))
                    .executor(format!("{executor:.1}/s"))
                    .baseline(format!("{direct:.1}/s"))
                    .ratio(format!("{ratio:.2}×"))
                    .target("≥ 0.8×", ratio >= 0.8),
            );
        }
        self.notes.push(format!(
            "P2: each client loops on its own deployment (1 replica) for {:.1} s; executor \
             clients share one gRPC channel, direct clients one kube client. Same calls as P1.",
            self.sizes.p2_duration.as_secs_f64()
        ));
        Ok(())
    }

    async fn p2_run(&self, clients: usize, via_executor: bool) -> anyhow::Result<f64> {
        let mut pods = Vec::with_capacity(clients);
        for i in 0..clients {
            pods.push(self.pod_of(&format!("p2-{i}")).await?);
        }
        let duration = self.sizes.p2_duration;
        let start = Instant::now();
        let tasks: Vec<_> = pods
            .into_iter()
            .map(|mut pod| {
                let mut grpc = self.grpc.clone();
                let kube = self.kube.clone();
                tokio::spawn(async move {
                    let mut done = 0usize;
                    while start.elapsed() < duration {
                        pod = if via_executor {
                            executor_restart(&mut grpc, &pod).await?
                        } else {
                            direct_restart(&kube, &pod).await?
                        };
                        done += 1;
                    }
                    Ok::<_, anyhow::Error>(done)
                })
            })
            .collect();
        let mut total = 0;
        for task in tasks {
            total += task.await??;
        }
        Ok(total as f64 / start.elapsed().as_secs_f64())
    }
}
