//! `update_network_policy`: let traffic in through a NetworkPolicy (or stop letting it in)
//! when a policy blocks what it should not: an ingress rule from a namespace and/or pods with
//! some labels, optionally on one port, added to (or, with `remove`, taken from) the policy's
//! `spec.ingress` — `kubectl patch networkpolicy` with the rule, `Ingress` added to
//! `policyTypes` when missing. Then checked: the stored policy holds exactly the rules
//! expected. Undone by putting the recorded spec back.

use async_trait::async_trait;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::Patch;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{
    executor_patch, Access, ActionContext, ActionError, ActionSpec, Change, Outcome, ParamSpec,
    ParamType, Plan, Remediation, Risk, Update,
};

const PROTOCOLS: &[&str] = &["TCP", "UDP", "SCTP"];
/// The label every namespace carries with its name (Kubernetes 1.21+).
const NAMESPACE_NAME: &str = "kubernetes.io/metadata.name";

#[derive(Debug, Deserialize)]
struct Params {
    #[serde(default)]
    allow_from_namespace: Option<String>,
    #[serde(default)]
    allow_from_labels: Option<String>,
    #[serde(default)]
    port: Option<i64>,
    protocol: String,
    remove: bool,
}

/// What `update_network_policy` calls in the cluster (see [`ActionSpec::access`]).
const ACCESS: &[Access] = &[
    // The policy is read and its rules patched (the plan as a dry run, the rollback too).
    Access::new("networking.k8s.io", &["networkpolicies"], &["get", "patch"]),
];

pub struct UpdateNetworkPolicy {
    spec: ActionSpec,
}

impl UpdateNetworkPolicy {
    pub fn new() -> Self {
        UpdateNetworkPolicy {
            spec: ActionSpec {
                name: "update_network_policy",
                description: "Add (or with remove, take out) an ingress rule of a NetworkPolicy: from a \
                              namespace and/or pods with labels, optionally on one port; then check the \
                              stored policy. Undone by restoring the recorded spec.",
                risk: Risk::Medium,
                access: ACCESS,
                target_kinds: &["NetworkPolicy"],
                params: vec![
                    ParamSpec::new(
                        "allow_from_namespace",
                        ParamType::String,
                        "Namespace whose pods the rule lets in (by its kubernetes.io/metadata.name label).",
                    ),
                    ParamSpec::new(
                        "allow_from_labels",
                        ParamType::String,
                        "Pods the rule lets in, by labels: app=gateway,tier=edge (in the policy's namespace, or in allow_from_namespace).",
                    ),
                    ParamSpec::new("port", ParamType::Integer, "Port the rule opens; absent = every port.")
                        .bounds(1, 65535),
                    ParamSpec::new("protocol", ParamType::String, "Protocol of port.")
                        .one_of(PROTOCOLS)
                        .default("TCP"),
                    ParamSpec::new(
                        "remove",
                        ParamType::Boolean,
                        "Take this rule out of the policy instead of adding it.",
                    )
                    .default(false),
                ],
            },
        }
    }
}

/// `app=gateway,tier=edge` as matchLabels; errors name the parameter `field`.
pub(super) fn labels(field: &str, text: &str) -> Result<Map<String, Value>, ActionError> {
    let mut out = Map::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| ActionError::invalid(field, format!("{pair:?}: expected KEY=VALUE")))?;
        let (key, value) = (key.trim(), value.trim());
        let valid_key = !key.is_empty()
            && key.len() <= 317
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b));
        let valid_value = value.len() <= 63
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !valid_key || !valid_value {
            return Err(ActionError::invalid(
                field,
                format!(
                    "{pair:?} is not a label (KEY=VALUE of letters, digits, - _ . and / in keys)"
                ),
            ));
        }
        out.insert(key.to_string(), Value::String(value.to_string()));
    }
    if out.is_empty() {
        return Err(ActionError::invalid(field, "names no label"));
    }
    Ok(out)
}

/// The ingress rule the parameters describe, as the API server stores it.
fn rule(p: &Params) -> Result<Value, ActionError> {
    let mut peer = Map::new();
    if let Some(namespace) = p.allow_from_namespace.as_deref().filter(|n| !n.is_empty()) {
        peer.insert(
            "namespaceSelector".into(),
            json!({ "matchLabels": { NAMESPACE_NAME: namespace } }),
        );
    }
    if let Some(text) = p.allow_from_labels.as_deref().filter(|l| !l.is_empty()) {
        peer.insert(
            "podSelector".into(),
            json!({ "matchLabels": labels("allow_from_labels", text)? }),
        );
    }
    let mut rule = json!({ "from": [Value::Object(peer)] });
    if let Some(port) = p.port {
        rule["ports"] = json!([{ "port": port, "protocol": p.protocol }]);
    }
    Ok(rule)
}

/// The policy's spec with `rule` added (or removed); whether that changes anything.
fn changed_spec(spec: &Value, rule: &Value, remove: bool) -> (Value, bool) {
    let mut spec = spec.clone();
    let mut ingress: Vec<Value> = spec
        .get("ingress")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let present = ingress.contains(rule);
    let changed = if remove {
        ingress.retain(|r| r != rule);
        present
    } else {
        if !present {
            ingress.push(rule.clone());
        }
        !present
    };
    spec["ingress"] = Value::Array(ingress);
    let mut types: Vec<Value> = spec
        .get("policyTypes")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if !types.contains(&json!("Ingress")) {
        types.push(json!("Ingress"));
        spec["policyTypes"] = Value::Array(types);
    }
    (spec, changed)
}

/// Replaces the spec's ingress rules and policy types (a merge patch replaces lists whole).
fn spec_patch(spec: &Value) -> Patch<Value> {
    Patch::Merge(json!({ "spec": {
        "ingress": spec.get("ingress").cloned().unwrap_or_else(|| json!([])),
        "policyTypes": spec.get("policyTypes").cloned().unwrap_or_else(|| json!([])),
    }}))
}

impl UpdateNetworkPolicy {
    async fn read(ctx: &ActionContext) -> Result<(NetworkPolicy, Value), ActionError> {
        let api: kube::Api<NetworkPolicy> =
            kube::Api::namespaced(ctx.client.clone(), &ctx.target.namespace);
        let what = format!("networkpolicy {}", ctx.target.object_ref());
        let policy = ctx
            .retry(&format!("read {what}"), || api.get(&ctx.target.name))
            .await
            .map_err(|e| ActionError::from_kube(e, &what))?;
        let spec = serde_json::to_value(&policy.spec).unwrap_or(Value::Null);
        Ok((policy, spec))
    }
}

#[async_trait]
impl Remediation for UpdateNetworkPolicy {
    fn spec(&self) -> &ActionSpec {
        &self.spec
    }

    fn validate(&self, params: &Map<String, Value>) -> Result<(), ActionError> {
        let given = |name: &str| {
            params
                .get(name)
                .and_then(Value::as_str)
                .is_some_and(|s| !s.trim().is_empty())
        };
        if !given("allow_from_namespace") && !given("allow_from_labels") {
            return Err(ActionError::invalid(
                "allow_from_namespace",
                "required (or allow_from_labels): the rule must name who it lets in",
            ));
        }
        if let Some(text) = params.get("allow_from_labels").and_then(Value::as_str) {
            if !text.trim().is_empty() {
                labels("allow_from_labels", text)?;
            }
        }
        Ok(())
    }

    fn can_roll_back(&self) -> bool {
        true
    }

    async fn rollback(&self, ctx: &ActionContext, data: &Value) -> Result<Outcome, ActionError> {
        let spec = data
            .get("spec")
            .filter(|s| s.is_object())
            .ok_or_else(|| ActionError::Internal("rollback data holds no spec".into()))?;
        let api: kube::Api<NetworkPolicy> =
            kube::Api::namespaced(ctx.client.clone(), &ctx.target.namespace);
        let (params, patch) = (executor_patch(false), spec_patch(spec));
        ctx.retry(&format!("restore {}", ctx.target.object_ref()), || {
            api.patch(&ctx.target.name, &params, &patch)
        })
        .await?;
        Ok(Outcome {
            message: format!("{} restored", ctx.target.object_ref()),
            result: json!({ "restored": true }),
        })
    }

    async fn plan(&self, ctx: &ActionContext) -> Result<Plan, ActionError> {
        let p: Params = ctx.params()?;
        let rule = rule(&p)?;
        let (before, spec) = Self::read(ctx).await?;
        let (wanted, changed) = changed_spec(&spec, &rule, p.remove);
        let api: kube::Api<NetworkPolicy> =
            kube::Api::namespaced(ctx.client.clone(), &ctx.target.namespace);
        let after = api
            .patch(
                &ctx.target.name,
                &executor_patch(true),
                &spec_patch(&wanted),
            )
            .await?;
        let verb = if p.remove { "remove" } else { "add" };
        let summary = if changed {
            format!("{}: {verb} ingress rule {rule}", ctx.target.object_ref())
        } else {
            format!("{}: nothing to {verb}: {rule}", ctx.target.object_ref())
        };
        Ok(Plan::single(Change::update(
            ctx.target.object_ref(),
            summary,
            &before,
            &after,
        )))
    }

    async fn execute(&self, ctx: &ActionContext) -> Result<Outcome, ActionError> {
        let p: Params = ctx.params()?;
        let rule = rule(&p)?;
        let (_, spec) = Self::read(ctx).await?;
        let (wanted, changed) = changed_spec(&spec, &rule, p.remove);
        ctx.reporter.rollback_data(json!({
            "kind": "NetworkPolicy",
            "namespace": ctx.target.namespace,
            "name": ctx.target.name,
            "spec": spec,
        }));
        let api: kube::Api<NetworkPolicy> =
            kube::Api::namespaced(ctx.client.clone(), &ctx.target.namespace);
        if changed {
            let (params, patch) = (executor_patch(false), spec_patch(&wanted));
            ctx.retry(&format!("patch {}", ctx.target.object_ref()), || {
                api.patch(&ctx.target.name, &params, &patch)
            })
            .await?;
            ctx.reporter.progress(Update::new(format!(
                "{}: ingress rule {}",
                ctx.target.object_ref(),
                if p.remove { "removed" } else { "added" }
            )));
        }
        // The check: what the API server stores is what was asked for.
        let (_, stored) = Self::read(ctx).await?;
        let holds = stored
            .get("ingress")
            .and_then(Value::as_array)
            .is_some_and(|rules| rules.contains(&rule));
        if holds == p.remove {
            return Err(ActionError::Precondition(format!(
                "{} does not hold the change after the patch (another writer?): {}",
                ctx.target.object_ref(),
                stored.get("ingress").cloned().unwrap_or(Value::Null)
            )));
        }
        let rules = stored
            .get("ingress")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        Ok(Outcome {
            message: format!(
                "{}: {} ({rules} ingress rule(s))",
                ctx.target.object_ref(),
                match (changed, p.remove) {
                    (false, _) => "already as asked",
                    (true, false) => "rule added",
                    (true, true) => "rule removed",
                }
            ),
            result: json!({ "rule": rule, "changed": changed, "ingress_rules": rules }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_is_added_once_and_removed_and_ingress_becomes_a_policy_type() {
        let p = Params {
            allow_from_namespace: Some("gateway".into()),
            allow_from_labels: Some("app=edge".into()),
            port: Some(8080),
            protocol: "TCP".into(),
            remove: false,
        };
        let rule = rule(&p).unwrap();
        let spec = json!({ "podSelector": {}, "policyTypes": ["Egress"] });
        let (added, changed) = changed_spec(&spec, &rule, false);
        assert!(changed);
        assert_eq!(added["ingress"], json!([rule]));
        assert_eq!(added["policyTypes"], json!(["Egress", "Ingress"]));
        assert!(!changed_spec(&added, &rule, false).1);
        let (removed, changed) = changed_spec(&added, &rule, true);
        assert!(changed);
        assert_eq!(removed["ingress"], json!([]));
        assert!(labels("f", "app").is_err());
        assert!(labels("f", "app=a b").is_err());
    }
}
