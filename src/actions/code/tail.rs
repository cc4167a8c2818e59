//! `code_logs`: an API's logs, live, as the execution's progress events: every pod of the API
//! is followed (`kubectl logs -f --tail`), new pods as they start, for `duration_seconds`; the
//! lines arrive in batches (one event per second at most, [`MAX_BATCH`] lines each) through
//! `WatchExecution` and the HTTP event stream. Reads only.

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use futures::{stream::SelectAll, AsyncBufReadExt, StreamExt};
use kube::{api::LogParams, ResourceExt};
use serde::Deserialize;
use serde_json::json;

use super::{api_id, existing_deployment, pods, CONTAINER};
use crate::actions::{
    Access, ActionContext, ActionError, ActionSpec, Outcome, ParamSpec, ParamType, Plan,
    Remediation, Risk, Update,
};

/// Lines in one event at most.
const MAX_BATCH: usize = 100;
/// How often new pods are looked for.
const RELIST: Duration = Duration::from_secs(2);
const FLUSH: Duration = Duration::from_secs(1);

#[derive(Debug, Deserialize)]
struct Params {
    duration_seconds: i64,
    tail_lines: i64,
}

/// What `code_logs` calls in the cluster (see [`ActionSpec::access`]).
const ACCESS: &[Access] = &[
    // The Deployment is read, its pods listed and their logs followed.
    Access::new("apps", &["deployments"], &["get"]),
    Access::new("", &["pods"], &["list"]),
    Access::new("", &["pods/log"], &["get"]),
];

pub struct CodeLogs {
    spec: ActionSpec,
}

impl CodeLogs {
    pub fn new() -> Self {
        CodeLogs {
            spec: ActionSpec {
                name: "code_logs",
                description: "Stream an API's logs (target deployment api-<uuid>): every pod followed for a while, \
                              the lines as progress events of the execution (WatchExecution, the HTTP event stream); \
                              reads only.",
                risk: Risk::Low,
                access: ACCESS,
                target_kinds: &["Deployment"],
                params: vec![
                    ParamSpec::new("duration_seconds", ParamType::Integer, "How long to follow the logs.")
                        .bounds(1, 3600)
                        .default(60),
                    ParamSpec::new("tail_lines", ParamType::Integer, "Lines of each pod's log before following it.")
                        .bounds(0, 1000)
                        .default(50),
                ],
            },
        }
    }
}

type Lines = std::pin::Pin<Box<dyn futures::Stream<Item = (String, String)> + Send>>;

#[async_trait]
impl Remediation for CodeLogs {
    fn spec(&self) -> &ActionSpec {
        &self.spec
    }

    fn read_only(&self) -> bool {
        true
    }

    async fn plan(&self, ctx: &ActionContext) -> Result<Plan, ActionError> {
        let id = api_id(ctx)?;
        let p: Params = ctx.params()?;
        Ok(Plan {
            summary: format!(
                "follow the logs of API {id} for {} s; nothing changes",
                p.duration_seconds
            ),
            ..Default::default()
        })
    }

    async fn execute(&self, ctx: &ActionContext) -> Result<Outcome, ActionError> {
        let id = api_id(ctx)?;
        let p: Params = ctx.params()?;
        existing_deployment(ctx, &id).await?;
        let deadline = tokio::time::sleep(Duration::from_secs(p.duration_seconds as u64));
        tokio::pin!(deadline);
        let mut relist = tokio::time::interval(RELIST);
        let mut flush = tokio::time::interval(FLUSH);
        let mut streams: SelectAll<Lines> = SelectAll::new();
        let mut following: HashSet<String> = HashSet::new();
        let mut batch: Vec<String> = Vec::new();
        let (mut lines, mut events) = (0u64, 0u64);
        let report = |batch: &mut Vec<String>, events: &mut u64| {
            if batch.is_empty() {
                return;
            }
            *events += 1;
            let shown = std::mem::take(batch);
            ctx.reporter.progress(
                Update::new(format!("{} log line(s) of API {id}", shown.len()))
                    .details(json!({ "log": shown })),
            );
        };
        loop {
            tokio::select! {
                _ = &mut deadline => break,
                _ = relist.tick() => {
                    for pod in pods(ctx, &id).await? {
                        let name = pod.name_any();
                        let started = pod.status.as_ref().is_some_and(|s| s.start_time.is_some());
                        if !started || following.contains(&name) {
                            continue;
                        }
                        let params = LogParams {
                            container: Some(CONTAINER.into()),
                            follow: true,
                            tail_lines: Some(p.tail_lines),
                            ..Default::default()
                        };
                        let Ok(reader) = ctx.pods().log_stream(&name, &params).await else {
                            continue;
                        };
                        ctx.reporter.progress(Update::new(format!("following the log of pod {name}")));
                        following.insert(name.clone());
                        let stream: Lines = Box::pin(
                            reader
                                .lines()
                                .filter_map(|l| async move { l.ok() })
                                .map(move |line| (name.clone(), line)),
                        );
                        streams.push(stream);
                    }
                }
                Some((pod, line)) = streams.next(), if !streams.is_empty() => {
                    lines += 1;
                    batch.push(format!("{pod}: {line}"));
                    if batch.len() >= MAX_BATCH {
                        report(&mut batch, &mut events);
                    }
                }
                _ = flush.tick() => report(&mut batch, &mut events),
            }
        }
        report(&mut batch, &mut events);
        Ok(Outcome {
            message: format!(
                "followed API {id} for {} s: {lines} line(s) from {} pod(s)",
                p.duration_seconds,
                following.len()
            ),
            result: json!({
                "api_id": id,
                "lines": lines,
                "pods": following.into_iter().collect::<Vec<_>>(),
            }),
        })
    }
}
