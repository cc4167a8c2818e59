//! `notify_only`: records the request (and its alert) as an execution and emits its message as
//! an event for subscribers; touches nothing in the cluster.

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;

use super::{
    Access, ActionContext, ActionError, ActionSpec, Outcome, ParamSpec, ParamType, Plan,
    Remediation, Risk, Update,
};

#[derive(Debug, Deserialize)]
struct Params {
    message: Option<String>,
}

/// What `notify_only` calls in the cluster (see [`ActionSpec::access`]).
const ACCESS: &[Access] = &[
    // Touches nothing itself. The engine lists the nodes for the policy's facts about a Node
    // target.
    Access::new("", &["nodes"], &["list"]),
];

pub struct NotifyOnly {
    spec: ActionSpec,
}

impl NotifyOnly {
    pub fn new() -> Self {
        NotifyOnly {
            spec: ActionSpec {
                name: "notify_only",
                description: "Record and emit a notification about the target; changes nothing.",
                risk: Risk::Low,
                access: ACCESS,
                target_kinds: &[
                    "Deployment",
                    "StatefulSet",
                    "DaemonSet",
                    "Pod",
                    "Node",
                    "PersistentVolumeClaim",
                    "HorizontalPodAutoscaler",
                    "Namespace",
                ],
                params: vec![ParamSpec::new("message", ParamType::String, "What to say.")],
            },
        }
    }
}

#[async_trait]
impl Remediation for NotifyOnly {
    fn spec(&self) -> &ActionSpec {
        &self.spec
    }

    fn read_only(&self) -> bool {
        true
    }

    async fn plan(&self, ctx: &ActionContext) -> Result<Plan, ActionError> {
        Ok(Plan {
            summary: format!("{}: notify only, nothing changes", ctx.target.object_ref()),
            ..Default::default()
        })
    }

    async fn execute(&self, ctx: &ActionContext) -> Result<Outcome, ActionError> {
        let p: Params = ctx.params()?;
        let message = p
            .message
            .unwrap_or_else(|| format!("notification about {}", ctx.target.object_ref()));
        ctx.reporter
            .progress(Update::new(message.clone()).details(json!({ "notification": message })));
        Ok(Outcome {
            message: format!("notified: {message}"),
            result: json!({ "notification": message }),
        })
    }
}
