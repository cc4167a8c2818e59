//! `restart_network`: connectivity or DNS failures. Restarts the cluster's network plugin
//! DaemonSets (found by their well-known names, or named by the caller) and then its DNS
//! Deployment (`coredns` or `kube-dns`), one after another, each followed to the end before
//! the next begins, so the cluster never loses every agent at once. The target is the
//! namespace they run in (usually `kube-system`, which the built-in policy protects: allow it
//! in your policy to use this action). Undone by putting every recorded template back.

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value;

use super::{
    restart_set::{self, Member},
    Access, ActionContext, ActionError, ActionSpec, Outcome, ParamSpec, ParamType, Plan,
    Remediation, Risk,
};
use crate::cluster::WorkloadKind;

/// DaemonSets of the common network plugins.
const NETWORK_PLUGINS: &[&str] = &[
    "calico-node",
    "cilium",
    "kube-flannel-ds",
    "kube-flannel",
    "canal",
    "weave-net",
    "aws-node",
    "kube-router",
    "antrea-agent",
    "kindnet",
];
/// The DNS Deployments of the common distributions.
const DNS: &[&str] = &["coredns", "kube-dns"];

#[derive(Debug, Deserialize)]
struct Params {
    #[serde(default)]
    components: Option<String>,
    include_dns: bool,
    include_kube_proxy: bool,
    wait_for_rollout: bool,
}

/// What `restart_network` calls in the cluster (see [`ActionSpec::access`]).
const ACCESS: &[Access] = &[
    // The CNI DaemonSets and the DNS Deployment are listed, read, restarted (the plan as a dry
    // run, the rollback restores the templates) and followed with a watch.
    Access::new(
        "apps",
        &["daemonsets", "deployments"],
        &["get", "list", "watch", "patch"],
    ),
];

pub struct RestartNetwork {
    spec: ActionSpec,
}

impl RestartNetwork {
    pub fn new() -> Self {
        RestartNetwork {
            spec: ActionSpec {
                name: "restart_network",
                description: "Restart the network plugin's DaemonSets, then the DNS Deployment, one at a time, \
                              each followed to the end (connectivity or DNS failures). The target is their \
                              namespace, e.g. kube-system. Undone by restoring every template.",
                risk: Risk::High,
                access: ACCESS,
                target_kinds: &["Namespace"],
                params: vec![
                    ParamSpec::new(
                        "components",
                        ParamType::String,
                        "DaemonSets and Deployments to restart, comma-separated, in order; absent = the \
                         known network plugins found (calico-node, cilium, flannel, weave, aws-node, …).",
                    ),
                    ParamSpec::new(
                        "include_dns",
                        ParamType::Boolean,
                        "Restart coredns / kube-dns after the network plugin.",
                    )
                    .default(true),
                    ParamSpec::new(
                        "include_kube_proxy",
                        ParamType::Boolean,
                        "Restart kube-proxy too.",
                    )
                    .default(false),
                    ParamSpec::new(
                        "wait_for_rollout",
                        ParamType::Boolean,
                        "Follow each restart to the end before the next.",
                    )
                    .default(true),
                ],
            },
        }
    }

    /// The workloads to restart, in order.
    async fn members(ctx: &ActionContext, p: &Params) -> Result<Vec<Member>, ActionError> {
        let namespace = ctx.target.name.clone();
        let daemonsets = restart_set::list(ctx, WorkloadKind::DaemonSet, &namespace).await?;
        let deployments = restart_set::list(ctx, WorkloadKind::Deployment, &namespace).await?;
        let find = |name: &str| -> Option<Member> {
            let kind = if daemonsets.iter().any(|(n, _)| n == name) {
                WorkloadKind::DaemonSet
            } else if deployments.iter().any(|(n, _)| n == name) {
                WorkloadKind::Deployment
            } else {
                return None;
            };
            Some(Member {
                kind,
                namespace: namespace.clone(),
                name: name.to_string(),
            })
        };
        let mut members = Vec::new();
        match p
            .components
            .as_deref()
            .map(str::trim)
            .filter(|c| !c.is_empty())
        {
            Some(list) => {
                for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                    let member = find(name).ok_or_else(|| {
                        ActionError::invalid(
                            "components",
                            format!("no DaemonSet or Deployment {name:?} in {namespace}"),
                        )
                    })?;
                    members.push(member);
                }
            }
            None => {
                members.extend(NETWORK_PLUGINS.iter().filter_map(|n| find(n)));
                if p.include_kube_proxy {
                    members.extend(find("kube-proxy"));
                }
                if p.include_dns {
                    members.extend(DNS.iter().filter_map(|n| find(n)));
                }
            }
        }
        members.dedup();
        if members.is_empty() {
            return Err(ActionError::Precondition(format!(
                "no network plugin DaemonSet ({}) nor DNS Deployment ({}) in {namespace}: name them with components",
                NETWORK_PLUGINS.join(", "),
                DNS.join(", ")
            )));
        }
        Ok(members)
    }
}

#[async_trait]
impl Remediation for RestartNetwork {
    fn spec(&self) -> &ActionSpec {
        &self.spec
    }

    fn can_roll_back(&self) -> bool {
        true
    }

    async fn rollback(&self, ctx: &ActionContext, data: &Value) -> Result<Outcome, ActionError> {
        restart_set::restore(ctx, data).await
    }

    async fn plan(&self, ctx: &ActionContext) -> Result<Plan, ActionError> {
        let p: Params = ctx.params()?;
        let members = Self::members(ctx, &p).await?;
        restart_set::plan_all(
            ctx,
            &members,
            &format!("restart the network in {}", ctx.target.name),
        )
        .await
    }

    async fn execute(&self, ctx: &ActionContext) -> Result<Outcome, ActionError> {
        let p: Params = ctx.params()?;
        let members = Self::members(ctx, &p).await?;
        let done = format!("network restarted in {}", ctx.target.name);
        restart_set::run_all(ctx, &members, p.wait_for_rollout, &done).await
    }
}
