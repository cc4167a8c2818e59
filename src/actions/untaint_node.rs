//! `untaint_node`: `kubectl taint nodes NODE key[:effect]-` — removes the taints with `key`
//! (only the one with `effect` when given; every effect otherwise). Idempotent: a node without
//! such a taint is success.

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Taint;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{
    cordon_node::get_node,
    taint_node::{describe, taints_of, update_taints, validate_key, write_taints, EFFECTS},
    Access, ActionContext, ActionError, ActionSpec, Change, Outcome, ParamSpec, ParamType, Plan,
    Remediation, Risk, Update,
};

#[derive(Debug, Deserialize)]
struct Params {
    key: String,
    effect: Option<String>,
}

/// What `untaint_node` calls in the cluster (see [`ActionSpec::access`]).
const ACCESS: &[Access] = &[
    // The node is read and its taints merge-patched (the plan as a dry run). The engine lists the
    // nodes for the policy's facts about a Node target.
    Access::new("", &["nodes"], &["get", "list", "patch"]),
];

pub struct UntaintNode {
    spec: ActionSpec,
}

impl UntaintNode {
    pub fn new() -> Self {
        UntaintNode {
            spec: ActionSpec {
                name: "untaint_node",
                description: "Remove a node's taints with a key, of one effect or of all \
                              (kubectl taint nodes NODE key[:effect]-); no such taint is success.",
                risk: Risk::Low,
                access: ACCESS,
                target_kinds: &["Node"],
                params: vec![
                    ParamSpec::new("key", ParamType::String, "Key of the taints to remove.")
                        .required(),
                    ParamSpec::new(
                        "effect",
                        ParamType::String,
                        "Remove only the taint with this effect; absent = every effect.",
                    )
                    .one_of(EFFECTS),
                ],
            },
        }
    }
}

impl Params {
    fn matches(&self, t: &Taint) -> bool {
        t.key == self.key && self.effect.as_ref().is_none_or(|e| *e == t.effect)
    }

    fn describe(&self) -> String {
        match &self.effect {
            Some(e) => format!("{}:{e}", self.key),
            None => self.key.clone(),
        }
    }
}

/// The taints left once those `p` names are gone, `None` when none of them is present.
fn without(p: &Params, taints: &[Taint]) -> Option<Vec<Taint>> {
    let kept: Vec<Taint> = taints.iter().filter(|t| !p.matches(t)).cloned().collect();
    (kept.len() != taints.len()).then_some(kept)
}

#[async_trait]
impl Remediation for UntaintNode {
    fn spec(&self) -> &ActionSpec {
        &self.spec
    }

    fn validate(&self, params: &Map<String, Value>) -> Result<(), ActionError> {
        match params.get("key").and_then(Value::as_str) {
            Some(key) => validate_key(key),
            None => Ok(()),
        }
    }

    async fn plan(&self, ctx: &ActionContext) -> Result<Plan, ActionError> {
        let p: Params = ctx.params()?;
        let name = &ctx.target.name;
        let node = get_node(ctx).await?;
        let taints = taints_of(&node);
        let Some(after) = without(&p, &taints) else {
            return Ok(Plan {
                summary: format!("node {name} has no taint {}: nothing to do", p.describe()),
                ..Default::default()
            });
        };
        let removed: Vec<String> = taints
            .iter()
            .filter(|t| p.matches(t))
            .map(describe)
            .collect();
        let patched = write_taints(ctx, &node, &after, true).await?;
        let summary = format!("node {name}: remove taint(s) {}", removed.join(", "));
        Ok(Plan::single(Change::update(
            format!("node/{name}"),
            summary,
            &node,
            &patched,
        )))
    }

    async fn execute(&self, ctx: &ActionContext) -> Result<Outcome, ActionError> {
        let p: Params = ctx.params()?;
        let name = ctx.target.name.clone();
        let (before, after) = update_taints(ctx, |taints| Ok(without(&p, taints))).await?;
        ctx.reporter.rollback_data(json!({
            "kind": "Node",
            "name": name,
            "taints": before,
        }));
        let Some(after) = after else {
            return Ok(Outcome {
                message: format!("node {name} has no taint {}", p.describe()),
                result: json!({ "node": name, "changed": false, "taints": before }),
            });
        };
        let removed: Vec<String> = before
            .iter()
            .filter(|t| p.matches(t))
            .map(describe)
            .collect();
        let message = format!("node {name} untainted {}", removed.join(", "));
        ctx.reporter
            .progress(Update::new(message.clone()).progress(1, 1));
        Ok(Outcome {
            message,
            result: json!({ "node": name, "changed": true, "removed": removed, "taints": after }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_taint(key: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: None,
            effect: effect.into(),
            time_added: None,
        }
    }

    #[test]
    fn without_an_effect_every_taint_of_the_key_goes() {
        let taints = vec![
            mk_taint("k", "NoSchedule"),
            mk_taint("k", "NoExecute"),
            mk_taint("other", "NoSchedule"),
        ];
        let all = Params {
            key: "k".into(),
            effect: None,
        };
        assert_eq!(
            without(&all, &taints).unwrap(),
            vec![mk_taint("other", "NoSchedule")]
        );
        let one = Params {
            key: "k".into(),
            effect: Some("NoExecute".into()),
        };
        assert_eq!(without(&one, &taints).unwrap().len(), 2);
        let none = Params {
            key: "absent".into(),
            effect: None,
        };
        assert!(without(&none, &taints).is_none());
    }
}
