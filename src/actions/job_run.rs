//! Running a maintenance command as a Kubernetes Job: shared by the actions that work inside
//! a volume (`cleanup_storage`). The Job is hardened (non-root, read-only root filesystem, no
//! privilege escalation, all capabilities dropped, no service-account token), bounded
//! (`activeDeadlineSeconds`, `backoffLimit: 0`), cleaned up by the cluster
//! (`ttlSecondsAfterFinished`), placed on the node of a pod that already mounts the claim (a
//! ReadWriteOnce volume is only there), followed until it completes or fails, and its log
//! becomes the action's result.

use k8s_openapi::api::{batch::v1::Job, core::v1::Pod};
use kube::{
    api::{ListParams, LogParams, PostParams},
    runtime::wait::await_condition,
    Api, ResourceExt,
};
use serde_json::{json, Value};

use super::{ActionContext, ActionError, Change, Update};

/// How long a finished Job and its pod stay for inspection.
const TTL_AFTER_FINISHED: i64 = 3600;
/// Log lines of the Job kept in the result.
const LOG_LINES: i64 = 200;

/// What to run, on which claim.
#[derive(Default)]
pub(super) struct JobRun {
    /// Names the Job: `PREFIX-TIMESTAMP`.
    pub prefix: String,
    pub image: String,
    pub command: Vec<String>,
    /// The claim, mounted at `/data`, if any.
    pub claim: Option<String>,
    pub read_only: bool,
    pub deadline_seconds: i64,
    /// The container's environment (`env` entries, e.g. from a Secret: the executor never
    /// reads the values).
    pub env: Vec<Value>,
    /// The pod's ServiceAccount (with its token mounted); none = no token at all.
    pub service_account: Option<String>,
    /// The container's requests and limits instead of the small defaults.
    pub resources: Option<Value>,
    /// How long the finished Job stays; default an hour.
    pub ttl_seconds: Option<i64>,
}

/// Deletes a Job (and its pods) when dropped armed: an execution cancelled or timed out while
/// its Job runs leaves no Job behind.
struct DeleteOnDrop {
    jobs: Api<Job>,
    name: String,
    armed: bool,
}

impl Drop for DeleteOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (jobs, name) = (self.jobs.clone(), self.name.clone());
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let params = kube::api::DeleteParams::background();
                if let Err(e) = jobs.delete(&name, &params).await {
                    tracing::warn!(job = %name, error = %e, "could not delete the Job of a stopped execution");
                }
            });
        }
    }
}

impl JobRun {
    fn name(&self) -> String {
        let prefix: String = self.prefix.chars().take(40).collect();
        // Two runs within one second get Jobs of their own.
        let unique = &uuid::Uuid::new_v4().simple().to_string()[..5];
        format!(
            "{}-{}-{unique}",
            prefix.trim_end_matches('-'),
            chrono::Utc::now().format("%Y%m%d%H%M%S")
        )
    }

    /// The node of a running pod that mounts the claim, if any.
    async fn node(&self, ctx: &ActionContext) -> Result<Option<String>, ActionError> {
        let Some(claim) = &self.claim else {
            return Ok(None);
        };
        let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.target.namespace);
        let all = ListParams::default();
        let listed = ctx.retry("list pods", || pods.list(&all)).await?;
        Ok(listed.items.into_iter().find_map(|p| {
            let spec = p.spec?;
            let mounts = spec.volumes.iter().flatten().any(|v| {
                v.persistent_volume_claim
                    .as_ref()
                    .is_some_and(|c| &c.claim_name == claim)
            });
            mounts.then_some(spec.node_name).flatten()
        }))
    }

    /// The Job as it will be created.
    async fn job(&self, ctx: &ActionContext, name: &str) -> Result<Job, ActionError> {
        let node = self.node(ctx).await?;
        let (mounts, volumes) = match &self.claim {
            Some(claim) => (
                json!([{ "name": "data", "mountPath": "/data", "readOnly": self.read_only }]),
                json!([{ "name": "data", "persistentVolumeClaim": { "claimName": claim, "readOnly": self.read_only } }]),
            ),
            None => (json!([]), json!([])),
        };
        let job = json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": name,
                "namespace": ctx.target.namespace,
                "labels": {
                    "app.kubernetes.io/managed-by": "executor-service",
                    "executor-service.io/for": ctx.target.name,
                },
            },
            "spec": {
                "backoffLimit": 0,
                "activeDeadlineSeconds": self.deadline_seconds,
                "ttlSecondsAfterFinished": self.ttl_seconds.unwrap_or(TTL_AFTER_FINISHED),
                "template": {
                    "metadata": { "labels": { "app.kubernetes.io/managed-by": "executor-service" } },
                    "spec": {
                        "restartPolicy": "Never",
                        "serviceAccountName": self.service_account,
                        "automountServiceAccountToken": self.service_account.is_some(),
                        "nodeName": node,
                        "securityContext": {
                            "runAsNonRoot": true,
                            "runAsUser": 65532,
                            "runAsGroup": 65532,
                            "fsGroup": 65532,
                            "seccompProfile": { "type": "RuntimeDefault" },
                        },
                        "containers": [{
                            "name": "run",
                            "image": self.image,
                            "command": self.command,
                            "securityContext": {
                                "allowPrivilegeEscalation": false,
                                "readOnlyRootFilesystem": true,
                                "capabilities": { "drop": ["ALL"] },
                            },
                            "resources": self.resources.clone().unwrap_or_else(|| json!({
                                "requests": { "cpu": "50m", "memory": "32Mi" },
                                "limits": { "cpu": "500m", "memory": "128Mi" },
                            })),
                            "env": self.env,
                            "volumeMounts": mounts,
                        }],
                        "volumes": volumes,
                    },
                },
            },
        });
        serde_json::from_value(job).map_err(|e| ActionError::Internal(format!("job: {e}")))
    }

    /// The Job's creation, as the API server's dry run answers it.
    pub async fn plan(&self, ctx: &ActionContext, summary: String) -> Result<Change, ActionError> {
        let name = self.name();
        let job = self.job(ctx, &name).await?;
        let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ctx.target.namespace);
        let checked = jobs
            .create(
                &PostParams {
                    dry_run: true,
                    ..Default::default()
                },
                &job,
            )
            .await?;
        Ok(Change::create(
            format!("{}/job/{name}", ctx.target.namespace),
            summary,
            &checked,
        ))
    }

    /// Creates the Job, follows it to its end and returns its name and log; a failed Job is
    /// an error carrying the log's last lines.
    pub async fn run(&self, ctx: &ActionContext) -> Result<(String, String), ActionError> {
        let name = self.name();
        let job = self.job(ctx, &name).await?;
        let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ctx.target.namespace);
        let create = PostParams::default();
        ctx.retry(&format!("create job {name}"), || jobs.create(&create, &job))
            .await?;
        let mut guard = DeleteOnDrop {
            jobs: jobs.clone(),
            name: name.clone(),
            armed: true,
        };
        ctx.reporter.progress(Update::new(format!(
            "job {}/{name} created (image {}{})",
            ctx.target.namespace,
            self.image,
            self.claim
                .as_ref()
                .map(|c| format!(", claim {c} at /data"))
                .unwrap_or_default()
        )));
        let ended = |job: Option<&Job>| {
            job.and_then(|j| j.status.as_ref())
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| {
                    cs.iter().any(|c| {
                        (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True"
                    })
                })
        };
        let finished = await_condition(jobs.clone(), &name, ended)
            .await
            .map_err(|e| ActionError::Internal(format!("following job {name}: {e}")))?;
        // It ended by itself: it stays for inspection until its TTL.
        guard.armed = false;
        let log = self.log(ctx, &name).await;
        let failed = finished
            .as_ref()
            .and_then(|j| j.status.as_ref())
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| {
                cs.iter()
                    .find(|c| c.type_ == "Failed" && c.status == "True")
            })
            .map(|c| c.reason.clone().unwrap_or_default());
        if let Some(reason) = failed {
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            return Err(ActionError::Precondition(format!(
                "job {}/{name} failed ({reason}); last log lines: {}",
                ctx.target.namespace,
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            )));
        }
        Ok((name, log))
    }

    async fn log(&self, ctx: &ActionContext, job: &str) -> String {
        let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.target.namespace);
        let of_job = ListParams::default().labels(&format!("job-name={job}"));
        let Ok(listed) = pods.list(&of_job).await else {
            return String::new();
        };
        let mut text = String::new();
        for pod in listed.items {
            let params = LogParams {
                tail_lines: Some(LOG_LINES),
                ..Default::default()
            };
            match pods.logs(&pod.name_any(), &params).await {
                Ok(log) => text.push_str(&log),
                Err(e) => text.push_str(&format!("(log of {} unavailable: {e})\n", pod.name_any())),
            }
        }
        text
    }
}

/// The result of a Job's run.
pub(super) fn result(job: &str, log: &str, extra: Value) -> Value {
    let mut result = json!({ "job": job, "log": log });
    if let (Some(out), Value::Object(more)) = (result.as_object_mut(), extra) {
        out.extend(more);
    }
    result
}
