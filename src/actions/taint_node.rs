//! `taint_node`: `kubectl taint nodes NODE key[=value]:effect` — adds a taint, or changes the
//! value of the taint with the same key and effect when `overwrite` is set (kubectl refuses
//! otherwise). Idempotent: an identical taint is success. The key and value are checked as
//! kubectl checks them (a qualified name and a label value).

use async_trait::async_trait;
use k8s_openapi::{
    api::core::v1::{Node, Taint},
    apimachinery::pkg::apis::meta::v1::Time,
};
use kube::api::{Patch, PatchParams};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{
    cordon_node::{get_node, nodes},
    Access, ActionContext, ActionError, ActionSpec, Change, Outcome, ParamSpec, ParamType, Plan,
    Remediation, Risk, Update,
};

/// The effects a taint may have (kubectl accepts exactly these).
pub(super) const EFFECTS: &[&str] = &["NoSchedule", "PreferNoSchedule", "NoExecute"];

/// How often a taint update is retried when the node changed under it (409 Conflict).
const CONFLICT_RETRIES: usize = 3;

#[derive(Debug, Deserialize)]
struct Params {
    key: String,
    value: Option<String>,
    effect: String,
    overwrite: bool,
}

/// What `taint_node` calls in the cluster (see [`ActionSpec::access`]).
const ACCESS: &[Access] = &[
    // The node is read and its taints merge-patched (the plan as a dry run). The engine lists the
    // nodes for the policy's facts about a Node target.
    Access::new("", &["nodes"], &["get", "list", "patch"]),
];

pub struct TaintNode {
    spec: ActionSpec,
}

impl TaintNode {
    pub fn new() -> Self {
        TaintNode {
            spec: ActionSpec {
                name: "taint_node",
                description: "Add a taint to a node (kubectl taint nodes NODE key=value:effect); \
                              an identical taint already present is success.",
                risk: Risk::Medium,
                access: ACCESS,
                target_kinds: &["Node"],
                params: vec![
                    ParamSpec::new(
                        "key",
                        ParamType::String,
                        "Taint key: a qualified name such as dedicated or example.com/maintenance.",
                    )
                    .required(),
                    ParamSpec::new(
                        "value",
                        ParamType::String,
                        "Taint value (a label value); absent = no value.",
                    ),
                    ParamSpec::new("effect", ParamType::String, "Taint effect.")
                        .one_of(EFFECTS)
                        .default("NoSchedule"),
                    ParamSpec::new(
                        "overwrite",
                        ParamType::Boolean,
                        "Replace the value of a taint with the same key and effect (kubectl --overwrite).",
                    )
                    .default(false),
                ],
            },
        }
    }
}

/// kubectl's `key=value:effect` form of a taint.
pub(super) fn describe(taint: &Taint) -> String {
    match taint.value.as_deref() {
        Some(v) if !v.is_empty() => format!("{}={v}:{}", taint.key, taint.effect),
        _ => format!("{}:{}", taint.key, taint.effect),
    }
}

pub(super) fn taints_of(node: &Node) -> Vec<Taint> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
}

/// A name part of a qualified name or a label value: alphanumerics, `-`, `_`, `.`, starting
/// and ending with an alphanumeric.
fn is_name_part(s: &str) -> bool {
    let bytes = s.as_bytes();
    let edge = |b: u8| b.is_ascii_alphanumeric();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.first().copied().is_some_and(edge)
        && bytes.last().copied().is_some_and(edge)
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Checks a taint key the way kubectl does (`IsQualifiedName`): `[prefix/]name`, the prefix a
/// DNS subdomain, the name at most 63 characters of alphanumerics, `-`, `_` and `.`.
///
/// # Errors
/// [`ActionError::InvalidParameter`] naming `parameters.key`.
pub(super) fn validate_key(key: &str) -> Result<(), ActionError> {
    let ok = match key.split_once('/') {
        Some((prefix, name)) => is_dns_subdomain(prefix) && is_name_part(name),
        None => is_name_part(key),
    };
    if ok {
        Ok(())
    } else {
        Err(ActionError::invalid(
            "key",
            format!(
                "{key:?} is not a valid taint key: a qualified name must consist of alphanumeric characters, '-', '_' or '.', \
                 start and end with an alphanumeric character, be at most 63 characters, with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
            ),
        ))
    }
}

/// Writes `taints` as the node's whole taint list. A JSON merge patch replaces the list, as
/// kubectl's patch does (Node `spec.taints` has no merge key); the resourceVersion makes the
/// write fail with 409 if the node changed since `node` was read.
pub(super) async fn write_taints(
    ctx: &ActionContext,
    node: &Node,
    taints: &[Taint],
    dry_run: bool,
) -> Result<Node, kube::Error> {
    let list = if taints.is_empty() {
        Value::Null
    } else {
        serde_json::to_value(taints).unwrap_or(Value::Null)
    };
    let patch = json!({
        "metadata": { "resourceVersion": node.metadata.resource_version },
        "spec": { "taints": list },
    });
    let params = if dry_run {
        PatchParams::default().dry_run()
    } else {
        PatchParams::default()
    };
    nodes(ctx)
        .patch(&ctx.target.name, &params, &Patch::Merge(patch))
        .await
}

/// Re-reads the node and applies `change` until the write does not conflict.
/// `change` returns the new taint list, or `None` when nothing needs to change.
///
/// # Errors
/// Whatever `change` returns, API errors, or a conflict that persists.
pub(super) async fn update_taints(
    ctx: &ActionContext,
    change: impl Fn(&[Taint]) -> Result<Option<Vec<Taint>>, ActionError>,
) -> Result<(Vec<Taint>, Option<Vec<Taint>>), ActionError> {
    let mut attempt = 0;
    loop {
        let node = get_node(ctx).await?;
        let before = taints_of(&node);
        let Some(after) = change(&before)? else {
            return Ok((before, None));
        };
        match write_taints(ctx, &node, &after, false).await {
            Ok(_) => return Ok((before, Some(after))),
            Err(kube::Error::Api(s)) if s.code == 409 && attempt < CONFLICT_RETRIES => {
                attempt += 1;
            }
            Err(e) => return Err(ActionError::Kube(e)),
        }
    }
}

/// The new taint list with `taint` added, `None` when an identical one is present.
fn with_taint(
    node_name: &str,
    taints: &[Taint],
    taint: &Taint,
    overwrite: bool,
) -> Result<Option<Vec<Taint>>, ActionError> {
    let same = |t: &&Taint| t.key == taint.key && t.effect == taint.effect;
    match taints.iter().find(same) {
        Some(existing)
            if existing.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("") =>
        {
            Ok(None)
        }
        Some(_) if !overwrite => Err(ActionError::Precondition(format!(
            "node {node_name} already has {} taint(s) with same effect(s) and overwrite is false",
            taint.key
        ))),
        Some(_) => Ok(Some(
            taints
                .iter()
                .map(|t| if same(&t) { taint.clone() } else { t.clone() })
                .collect(),
        )),
        None => {
            let mut out = taints.to_vec();
            out.push(taint.clone());
            Ok(Some(out))
        }
    }
}

impl TaintNode {
    fn taint(p: &Params) -> Taint {
        Taint {
            key: p.key.clone(),
            value: p.value.clone().filter(|v| !v.is_empty()),
            effect: p.effect.clone(),
            // The API writes timeAdded only for NoExecute taints (tolerationSeconds count from it).
            time_added: (p.effect == "NoExecute")
                .then(|| {
                    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                    serde_json::from_value::<Time>(Value::String(now)).ok()
                })
                .flatten(),
        }
    }
}

#[async_trait]
impl Remediation for TaintNode {
    fn spec(&self) -> &ActionSpec {
        &self.spec
    }

    fn validate(&self, params: &Map<String, Value>) -> Result<(), ActionError> {
        if let Some(key) = params.get("key").and_then(Value::as_str) {
            validate_key(key)?;
        }
        if let Some(value) = params.get("value").and_then(Value::as_str) {
            if !is_name_part(value) {
                return Err(ActionError::invalid(
                    "value",
                    format!(
                        "{value:?} is not a valid taint value: at most 63 characters of alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric"
                    ),
                ));
            }
        }
        Ok(())
    }

    async fn plan(&self, ctx: &ActionContext) -> Result<Plan, ActionError> {
        let p: Params = ctx.params()?;
        let name = &ctx.target.name;
        let node = get_node(ctx).await?;
        let taint = Self::taint(&p);
        let Some(after) = with_taint(name, &taints_of(&node), &taint, p.overwrite)? else {
            return Ok(Plan {
                summary: format!(
                    "node {name} already has taint {}: nothing to do",
                    describe(&taint)
                ),
                ..Default::default()
            });
        };
        let patched = write_taints(ctx, &node, &after, true).await?;
        let summary = format!("node {name}: taint {}", describe(&taint));
        let mut warnings = Vec::new();
        if taint.effect == "NoExecute" {
            warnings.push(format!(
                "a NoExecute taint evicts every pod on node {name} that does not tolerate it"
            ));
        }
        Ok(Plan::single(Change::update(
            format!("node/{name}"),
            summary,
            &node,
            &patched,
        ))
        .with_warnings(warnings))
    }

    async fn execute(&self, ctx: &ActionContext) -> Result<Outcome, ActionError> {
        let p: Params = ctx.params()?;
        let name = ctx.target.name.clone();
        let taint = Self::taint(&p);
        let (before, after) =
            update_taints(ctx, |taints| with_taint(&name, taints, &taint, p.overwrite)).await?;
        ctx.reporter.rollback_data(json!({
            "kind": "Node",
            "name": name,
            "taints": before,
        }));
        let described = describe(&taint);
        let Some(after) = after else {
            return Ok(Outcome {
                message: format!("node {name} already has taint {described}"),
                result: json!({ "node": name, "taint": described, "changed": false, "taints": before }),
            });
        };
        ctx.reporter
            .progress(Update::new(format!("node {name} tainted {described}")).progress(1, 1));
        Ok(Outcome {
            message: format!("node {name} tainted {described}"),
            result: json!({ "node": name, "taint": described, "changed": true, "taints": after }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_taint(key: &str, value: Option<&str>, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: value.map(str::to_string),
            effect: effect.into(),
            time_added: None,
        }
    }

    #[test]
    fn keys_are_checked_like_kubectl_qualified_names() {
        for ok in [
            "dedicated",
            "example.com/maintenance",
            "a_b.c-d",
            "node.kubernetes.io/x",
        ] {
            assert!(validate_key(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-x",
            "x-",
            "bad key",
            "Example.com/x",
            "/x",
            "a/b/c",
            &"k".repeat(64),
        ] {
            let err = validate_key(bad).unwrap_err().to_string();
            assert!(err.starts_with("parameters.key:"), "{bad}: {err}");
        }
    }

    #[test]
    fn an_identical_taint_is_a_no_op_and_a_different_value_needs_overwrite() {
        let taints = vec![mk_taint("k", Some("a"), "NoSchedule")];
        let same = mk_taint("k", Some("a"), "NoSchedule");
        assert!(with_taint("n", &taints, &same, false).unwrap().is_none());
        let other_value = mk_taint("k", Some("b"), "NoSchedule");
        let err = with_taint("n", &taints, &other_value, false).unwrap_err();
        assert!(err.to_string().contains("overwrite is false"), "{err}");
        let replaced = with_taint("n", &taints, &other_value, true)
            .unwrap()
            .unwrap();
        assert_eq!(replaced, vec![other_value]);
        let other_effect = mk_taint("k", Some("a"), "NoExecute");
        let added = with_taint("n", &taints, &other_effect, false)
            .unwrap()
            .unwrap();
        assert_eq!(added.len(), 2);
    }

    #[test]
    fn taints_read_as_kubectl_writes_them() {
        assert_eq!(
            describe(&mk_taint("k", Some("v"), "NoSchedule")),
            "k=v:NoSchedule"
        );
        assert_eq!(describe(&mk_taint("k", None, "NoExecute")), "k:NoExecute");
    }
}
