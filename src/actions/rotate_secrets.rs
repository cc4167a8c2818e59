//! `rotate_secrets`: compromised or expiring credentials. The Secret's values (all keys, or
//! the ones named) are replaced by new random material of the same length (at least
//! `min_length`); the previous values are first copied into a Secret of their own,
//! `NAME-previous-TIMESTAMP-XXXXX` (labelled with the secret it came from), which is what a rollback
//! restores from; then every Deployment, StatefulSet and DaemonSet of the namespace whose pods
//! use the Secret (volumes, projected volumes, `env` and `envFrom`, init containers included)
//! is restarted as `kubectl rollout restart` does and followed. Values never leave the
//! cluster: plans, events, results and rollback data show key names and lengths only.
//! Opaque Secrets only: certificates come from their issuer, tokens from their controller.

use async_trait::async_trait;
use base64::Engine as _;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ListParams, Patch, PostParams};
use rand::Rng;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{
    executor_patch,
    restarting::{self, now, restart_patch},
    workload, Access, ActionContext, ActionError, ActionSpec, Change, Outcome, ParamSpec,
    ParamType, Plan, Remediation, Risk, Update,
};
use crate::cluster::WorkloadKind;

/// The label on a copy of previous values: the Secret they came from.
const ROTATED_FROM: &str = "executor-service.io/rotated-from";

#[derive(Debug, Deserialize)]
struct Params {
    #[serde(default)]
    keys: Option<String>,
    min_length: i64,
    restart_consumers: bool,
    wait_for_rollout: bool,
}

/// What `rotate_secrets` calls in the cluster (see [`ActionSpec::access`]).
const ACCESS: &[Access] = &[
    // The Secret is read and rewritten (the plan as a dry run); its previous values go into a new
    // copy, read back by the rollback.
    Access::new("", &["secrets"], &["get", "create", "patch"]),
    // The workloads using the Secret are listed, read, restarted (the plan as a dry run) and
    // followed with a watch.
    Access::new(
        "apps",
        &["deployments", "statefulsets", "daemonsets"],
        &["get", "list", "watch", "patch"],
    ),
];

pub struct RotateSecrets {
    spec: ActionSpec,
}

impl RotateSecrets {
    pub fn new() -> Self {
        RotateSecrets {
            spec: ActionSpec {
                name: "rotate_secrets",
                description: "Replace an Opaque Secret's values with new random material of the same length, \
                              keeping the previous values in a copy for rollback, then restart and follow every \
                              workload of the namespace that uses it. Values never appear in plans, events or results.",
                risk: Risk::High,
                access: ACCESS,
                target_kinds: &["Secret"],
                params: vec![
                    ParamSpec::new(
                        "keys",
                        ParamType::String,
                        "Keys to rotate, comma-separated; absent = every key.",
                    ),
                    ParamSpec::new(
                        "min_length",
                        ParamType::Integer,
                        "Length of a new value at least (a longer old value keeps its length).",
                    )
                    .bounds(16, 512)
                    .default(32),
                    ParamSpec::new(
                        "restart_consumers",
                        ParamType::Boolean,
                        "Restart the Deployments, StatefulSets and DaemonSets whose pods use the Secret.",
                    )
                    .default(true),
                    ParamSpec::new(
                        "wait_for_rollout",
                        ParamType::Boolean,
                        "Follow each restart until its rollout completes.",
                    )
                    .default(true),
                ],
            },
        }
    }
}

/// A workload whose pods use the Secret.
#[derive(Debug, Clone)]
struct Consumer {
    kind: WorkloadKind,
    name: String,
}

impl Consumer {
    fn object_ref(&self, namespace: &str) -> String {
        workload::object_ref(namespace, self.kind, &self.name)
    }
}

/// Whether a pod template uses Secret `name`.
fn uses(template: &Value, name: &str) -> bool {
    let spec = &template["spec"];
    let volumes = spec["volumes"].as_array().into_iter().flatten().any(|v| {
        v["secret"]["secretName"] == name
            || v["projected"]["sources"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|s| s["secret"]["name"] == name)
    });
    let containers = ["containers", "initContainers"]
        .iter()
        .flat_map(|list| spec[*list].as_array().into_iter().flatten())
        .any(|c| {
            c["env"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|e| e["valueFrom"]["secretKeyRef"]["name"] == name)
                || c["envFrom"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|e| e["secretRef"]["name"] == name)
        });
    volumes || containers
}

/// The keys to rotate: the named ones (each must exist), else all.
fn keys_to_rotate(secret: &Secret, wanted: Option<&str>) -> Result<Vec<String>, ActionError> {
    let present: Vec<String> = secret
        .data
        .as_ref()
        .map(|d| d.keys().cloned().collect())
        .unwrap_or_default();
    let keys: Vec<String> = match wanted.map(str::trim).filter(|w| !w.is_empty()) {
        None => present.clone(),
        Some(list) => list
            .split(',')
            .map(|k| k.trim().to_string())
            .filter(|k| !k.is_empty())
            .collect(),
    };
    if let Some(missing) = keys.iter().find(|k| !present.contains(k)) {
        return Err(ActionError::invalid(
            "keys",
            format!(
                "the Secret has no key {missing:?} (it has: {})",
                present.join(", ")
            ),
        ));
    }
    if keys.is_empty() {
        return Err(ActionError::Precondition(
            "the Secret holds no data to rotate".into(),
        ));
    }
    Ok(keys)
}

/// New random material: letters and digits, the length of the old value (at least `min`).
fn fresh(old_length: usize, min: usize) -> Vec<u8> {
    let length = old_length.max(min);
    rand::rng()
        .sample_iter(&rand::distr::Alphanumeric)
        .take(length)
        .collect()
}

/// The Secret as a plan or result may show it: key names and lengths, never values.
fn masked(secret: &Secret, rotated: &[String], after: bool) -> Value {
    let data: Map<String, Value> = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| {
            let shown = if after && rotated.contains(k) {
                format!("(new value, {} bytes)", v.0.len())
            } else {
                format!("({} bytes)", v.0.len())
            };
            (k.clone(), Value::String(shown))
        })
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": { "name": secret.metadata.name, "namespace": secret.metadata.namespace },
        "type": secret.type_,
        "data": data,
    })
}

/// The merge patch setting `data` (base64, as the API takes it).
fn data_patch(data: &[(String, Vec<u8>)]) -> Patch<Value> {
    let data: Map<String, Value> = data
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                Value::String(base64::engine::general_purpose::STANDARD.encode(v)),
            )
        })
        .collect();
    Patch::Merge(json!({ "data": data }))
}

impl RotateSecrets {
    async fn read(ctx: &ActionContext) -> Result<Secret, ActionError> {
        let api: kube::Api<Secret> =
            kube::Api::namespaced(ctx.client.clone(), &ctx.target.namespace);
        let what = format!("secret {}", ctx.target.object_ref());
        let secret = ctx
            .retry(&format!("read {what}"), || api.get(&ctx.target.name))
            .await
            .map_err(|e| ActionError::from_kube(e, &what))?;
        match secret.type_.as_deref() {
            None | Some("Opaque") => Ok(secret),
            Some(other) => Err(ActionError::Precondition(format!(
                "{} is of type {other}: only Opaque Secrets are rotated here (certificates come from their issuer, tokens from their controller)",
                ctx.target.object_ref()
            ))),
        }
    }

    /// Every Deployment, StatefulSet and DaemonSet of the namespace whose pods use the Secret.
    async fn consumers(ctx: &ActionContext) -> Result<Vec<Consumer>, ActionError> {
        let mut found = Vec::new();
        for kind in [
            WorkloadKind::Deployment,
            WorkloadKind::StatefulSet,
            WorkloadKind::DaemonSet,
        ] {
            let api = kind.api(&ctx.client, &ctx.target.namespace);
            let all = ListParams::default();
            let list = ctx
                .retry(&format!("list {}s", kind.kind().to_lowercase()), || {
                    api.list(&all)
                })
                .await?;
            for object in list.items {
                let template = object
                    .data
                    .pointer("/spec/template")
                    .cloned()
                    .unwrap_or(Value::Null);
                if uses(&template, &ctx.target.name) {
                    found.push(Consumer {
                        kind,
                        name: object.metadata.name.clone().unwrap_or_default(),
                    });
                }
            }
        }
        Ok(found)
    }
}

#[async_trait]
impl Remediation for RotateSecrets {
    fn spec(&self) -> &ActionSpec {
        &self.spec
    }

    fn can_roll_back(&self) -> bool {
        true
    }

    /// Puts the previous values back from their copy and restarts the consumers again.
    async fn rollback(&self, ctx: &ActionContext, data: &Value) -> Result<Outcome, ActionError> {
        let copy = data["previous_copy"]
            .as_str()
            .ok_or_else(|| ActionError::Internal("rollback data names no copy".into()))?;
        let api: kube::Api<Secret> =
            kube::Api::namespaced(ctx.client.clone(), &ctx.target.namespace);
        let previous = ctx
            .retry(&format!("read the copy {copy}"), || api.get(copy))
            .await?;
        let old: Vec<(String, Vec<u8>)> = previous
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect();
        let (params, patch) = (executor_patch(false), data_patch(&old));
        ctx.retry(&format!("restore {}", ctx.target.object_ref()), || {
            api.patch(&ctx.target.name, &params, &patch)
        })
        .await?;
        for consumer in data["consumers"].as_array().into_iter().flatten() {
            let (Some(kind), Some(name)) = (
                consumer["kind"].as_str().and_then(WorkloadKind::from_kind),
                consumer["name"].as_str(),
            ) else {
                continue;
            };
            let at = now();
            let workloads = kind.api(&ctx.client, &ctx.target.namespace);
            let (params, patch) = (restarting::patch_params(false), restart_patch(&at));
            ctx.retry(&format!("restart {kind:?} {name}"), || {
                workloads.patch(name, &params, &patch)
            })
            .await?;
            workload::follow(ctx, kind, name, workload::updated_pods).await?;
        }
        Ok(Outcome {
            message: format!("{} restored from {copy}", ctx.target.object_ref()),
            result: json!({ "restored_from": copy }),
        })
    }

    async fn plan(&self, ctx: &ActionContext) -> Result<Plan, ActionError> {
        let p: Params = ctx.params()?;
        let secret = Self::read(ctx).await?;
        let keys = keys_to_rotate(&secret, p.keys.as_deref())?;
        let consumers = if p.restart_consumers {
            Self::consumers(ctx).await?
        } else {
            Vec::new()
        };
        // The API server checks the change; its answer is not shown (it holds values).
        let lengths: Vec<(String, Vec<u8>)> = keys
            .iter()
            .map(|k| {
                let old = secret
                    .data
                    .as_ref()
                    .and_then(|d| d.get(k))
                    .map_or(0, |v| v.0.len());
                (k.clone(), fresh(old, p.min_length as usize))
            })
            .collect();
        let api: kube::Api<Secret> =
            kube::Api::namespaced(ctx.client.clone(), &ctx.target.namespace);
        let mut checked = api
            .patch(
                &ctx.target.name,
                &executor_patch(true),
                &data_patch(&lengths),
            )
            .await?;
        checked.metadata = secret.metadata.clone();
        let mut changes = vec![Change::update(
            ctx.target.object_ref(),
            format!(
                "{}: new values for {} (previous kept in a copy for rollback)",
                ctx.target.object_ref(),
                keys.join(", ")
            ),
            &masked(&secret, &keys, false),
            &masked(&checked, &keys, true),
        )];
        let at = now();
        for consumer in &consumers {
            let after = consumer
                .kind
                .api(&ctx.client, &ctx.target.namespace)
                .patch(
                    &consumer.name,
                    &restarting::patch_params(true),
                    &restart_patch(&at),
                )
                .await?;
            let before = workload::get(ctx, consumer.kind, &consumer.name).await?;
            let object = consumer.object_ref(&ctx.target.namespace);
            changes.push(Change::update(
                object.clone(),
                format!("{object}: rolling restart (uses the Secret)"),
                &before,
                &after,
            ));
        }
        let summary = format!(
            "{}: rotate {} key(s), restart {} workload(s)",
            ctx.target.object_ref(),
            keys.len(),
            consumers.len()
        );
        Ok(Plan {
            summary,
            changes,
            warnings: Vec::new(),
        })
    }

    async fn execute(&self, ctx: &ActionContext) -> Result<Outcome, ActionError> {
        let p: Params = ctx.params()?;
        let secret = Self::read(ctx).await?;
        let keys = keys_to_rotate(&secret, p.keys.as_deref())?;
        let consumers = if p.restart_consumers {
            Self::consumers(ctx).await?
        } else {
            Vec::new()
        };
        let api: kube::Api<Secret> =
            kube::Api::namespaced(ctx.client.clone(), &ctx.target.namespace);
        // The previous values first, in the cluster (never in the store). The API server adds
        // a suffix: two rotations within one second each keep their own copy.
        let copy_prefix = format!(
            "{}-previous-{}-",
            ctx.target.name.chars().take(200).collect::<String>(),
            chrono::Utc::now().format("%Y%m%d%H%M%S")
        );
        let copy = Secret {
            metadata: kube::api::ObjectMeta {
                generate_name: Some(copy_prefix.clone()),
                namespace: Some(ctx.target.namespace.clone()),
                labels: Some([(ROTATED_FROM.to_string(), ctx.target.name.clone())].into()),
                ..Default::default()
            },
            type_: secret.type_.clone(),
            data: secret.data.clone(),
            ..Default::default()
        };
        let create = PostParams::default();
        let copy_name = ctx
            .retry(
                &format!("copy the previous values to {copy_prefix}…"),
                || api.create(&create, &copy),
            )
            .await?
            .metadata
            .name
            .unwrap_or_default();
        ctx.reporter.rollback_data(json!({
            "kind": "Secret",
            "namespace": ctx.target.namespace,
            "name": ctx.target.name,
            "previous_copy": copy_name,
            "keys": keys,
            "consumers": consumers.iter().map(|c| json!({
                "kind": c.kind.kind(), "name": c.name,
            })).collect::<Vec<_>>(),
        }));
        let new: Vec<(String, Vec<u8>)> = keys
            .iter()
            .map(|k| {
                let old = secret
                    .data
                    .as_ref()
                    .and_then(|d| d.get(k))
                    .map_or(0, |v| v.0.len());
                (k.clone(), fresh(old, p.min_length as usize))
            })
            .collect();
        let (params, patch) = (executor_patch(false), data_patch(&new));
        ctx.retry(&format!("write {}", ctx.target.object_ref()), || {
            api.patch(&ctx.target.name, &params, &patch)
        })
        .await?;
        ctx.reporter.progress(Update::new(format!(
            "{}: {} key(s) rotated ({}); previous values in {copy_name}",
            ctx.target.object_ref(),
            keys.len(),
            keys.join(", ")
        )));
        let total = consumers.len() as u64;
        for (done, consumer) in consumers.iter().enumerate() {
            let object = consumer.object_ref(&ctx.target.namespace);
            let at = now();
            let workloads = consumer.kind.api(&ctx.client, &ctx.target.namespace);
            let (params, patch) = (restarting::patch_params(false), restart_patch(&at));
            ctx.retry(&format!("restart {object}"), || {
                workloads.patch(&consumer.name, &params, &patch)
            })
            .await?;
            ctx.reporter.progress(
                Update::new(format!("{object}: restarted to pick up the new values"))
                    .progress(done as u64, total),
            );
            if p.wait_for_rollout {
                workload::follow(ctx, consumer.kind, &consumer.name, workload::updated_pods)
                    .await?;
            }
        }
        let restarted: Vec<String> = consumers
            .iter()
            .map(|c| c.object_ref(&ctx.target.namespace))
            .collect();
        Ok(Outcome {
            message: format!(
                "{}: {} key(s) rotated, {} workload(s) restarted",
                ctx.target.object_ref(),
                keys.len(),
                restarted.len()
            ),
            result: json!({
                "rotated_keys": keys,
                "previous_copy": copy_name,
                "restarted": restarted,
                "lengths": new.iter().map(|(k, v)| (k.clone(), json!(v.len()))).collect::<Map<_, _>>(),
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    #[test]
    fn every_way_a_pod_uses_a_secret_is_found() {
        for template in [
            json!({"spec": {"volumes": [{"name": "c", "secret": {"secretName": "db"}}]}}),
            json!({"spec": {"volumes": [{"name": "c", "projected": {"sources": [{"secret": {"name": "db"}}]}}]}}),
            json!({"spec": {"containers": [{"env": [{"name": "P", "valueFrom": {"secretKeyRef": {"name": "db", "key": "p"}}}]}]}}),
            json!({"spec": {"initContainers": [{"envFrom": [{"secretRef": {"name": "db"}}]}]}}),
        ] {
            assert!(uses(&template, "db"), "{template}");
            assert!(!uses(&template, "other"), "{template}");
        }
    }

    #[test]
    fn new_material_is_random_and_at_least_as_long() {
        let a = fresh(8, 32);
        let b = fresh(40, 32);
        assert_eq!((a.len(), b.len()), (32, 40));
        assert_ne!(a, fresh(8, 32));
        assert!(a.iter().all(u8::is_ascii_alphanumeric));
    }

    #[test]
    fn masked_secrets_show_lengths_never_values() {
        let secret = Secret {
            data: Some([("password".to_string(), ByteString(b"s3cr3t".to_vec()))].into()),
            ..Default::default()
        };
        let shown = masked(&secret, &["password".into()], true).to_string();
        assert!(
            !shown.contains("s3cr3t") && shown.contains("(new value, 6 bytes)"),
            "{shown}"
        );
    }
}
