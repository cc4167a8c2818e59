//! Authorization: which identity may run, approve or cancel which action on which targets.
//!
//! The rules come from `--authz FILE` (YAML or JSON) and are checked by the engine on the
//! *resolved* target (namespace and kind defaulted, or taken from the alert's labels), right
//! after validation and before the policy sees the request: a caller cannot learn what the
//! policy would say about a target it may not touch.
//!
//! ```yaml
//! rules:
//!   - identity: alice                 # exact identity, `*` = any authenticated caller
//!     actions: [scale_deployment, restart_pod]
//!     namespaces: [staging, "team-*"] # `*`, a `prefix*`, or an exact name
//!   - identity: oncall
//!     actions: ["*"]
//!     namespaces: ["*"]               # cluster-scoped targets (nodes) match only `*` or ""
//!     approve: true                   # may also approve or reject what the rule covers
//!   - identity: security-lead
//!     actions: ["*"]
//!     namespaces: [production]
//!     run: false                      # approves, never runs
//!     approve: true
//! ```
//!
//! A request is allowed when any rule allows it; without rules (no `--authz`) everything is.
//! Reading an execution (get, list, watch, the HTTP event stream) is allowed to its requester
//! and to whoever a rule lets run or approve that action on that target: its parameters,
//! events and result (diagnostics, say) are not for every authenticated caller.

use std::path::Path;

use serde::Deserialize;

use super::EngineError;
use crate::domain::Target;

/// Why an authorization file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum AuthzError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid YAML/JSON of the expected shape.
    #[error("parsing {origin}: {source}")]
    Parse {
        origin: String,
        #[source]
        source: serde_yaml::Error,
    },
    /// A rule is incomplete or names an action that does not exist.
    #[error("{origin}: rules[{index}]: {message}")]
    Invalid {
        origin: String,
        index: usize,
        message: String,
    },
}

/// One grant: `identity` may run (and, with `approve`, approve) `actions` on targets in
/// `namespaces` of `clusters`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// The authenticated identity (token identity, certificate CN); `*` = any.
    pub identity: String,
    /// Action names, `*` or `prefix*` patterns.
    pub actions: Vec<String>,
    /// Namespace patterns; a cluster-scoped target has the empty namespace.
    pub namespaces: Vec<String>,
    /// Kubeconfig context patterns; the default cluster is the empty name. Default: all.
    #[serde(default = "everything")]
    pub clusters: Vec<String>,
    /// Whether the identity may run what the rule covers (default true).
    #[serde(default = "yes")]
    pub run: bool,
    /// Whether the identity may approve or reject what the rule covers.
    #[serde(default)]
    pub approve: bool,
}

fn everything() -> Vec<String> {
    vec!["*".to_string()]
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    rules: Vec<Rule>,
}

/// Store pages one filtered listing reads at most before it answers with what it found.
pub const LIST_PAGES_SCANNED: usize = 20;

/// What a caller asks to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Run or dry-run (and cancel) an action.
    Run,
    /// Approve or reject an execution waiting for approval.
    Approve,
    /// Read an execution (get, list, watch): granted by a rule that lets the caller run or
    /// approve it. Its requester may always read it.
    Read,
}

impl Permission {
    fn verb(self) -> &'static str {
        match self {
            Permission::Run => "run",
            Permission::Approve => "approve",
            Permission::Read => "read executions of",
        }
    }
}

/// The loaded rules.
#[derive(Debug, Clone)]
pub struct Authorizer {
    rules: Vec<Rule>,
    origin: String,
}

impl Authorizer {
    /// Loads rules from a YAML or JSON file; every action named must be in `known_actions`
    /// (a typo in a security rule fails the start instead of silently granting nothing).
    ///
    /// # Errors
    /// An unreadable file, a malformed one, an empty field or an unknown action.
    pub fn from_file(path: &Path, known_actions: &[&str]) -> Result<Self, AuthzError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthzError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_yaml(&text, &path.display().to_string(), known_actions)
    }

    /// Parses rules from YAML (or JSON) text; `origin` names the source in errors.
    ///
    /// # Errors
    /// See [`Authorizer::from_file`].
    pub fn from_yaml(text: &str, origin: &str, known_actions: &[&str]) -> Result<Self, AuthzError> {
        let file: RulesFile = serde_yaml::from_str(text).map_err(|source| AuthzError::Parse {
            origin: origin.to_string(),
            source,
        })?;
        Self::new(file.rules, origin, known_actions)
    }

    /// Checks and keeps `rules`.
    ///
    /// # Errors
    /// See [`Authorizer::from_file`].
    pub fn new(rules: Vec<Rule>, origin: &str, known_actions: &[&str]) -> Result<Self, AuthzError> {
        for (index, rule) in rules.iter().enumerate() {
            let invalid = |message: String| AuthzError::Invalid {
                origin: origin.to_string(),
                index,
                message,
            };
            if rule.identity.trim().is_empty() {
                return Err(invalid("identity: is required".into()));
            }
            if rule.actions.is_empty() {
                return Err(invalid(
                    "actions: name at least one action, or \"*\"".into(),
                ));
            }
            if rule.namespaces.is_empty() {
                return Err(invalid(
                    "namespaces: name at least one namespace, or \"*\"".into(),
                ));
            }
            for action in &rule.actions {
                if !known_actions.iter().any(|known| matches(action, known)) {
                    return Err(invalid(format!(
                        "actions: {action:?} matches no action (known: {})",
                        known_actions.join(", ")
                    )));
                }
            }
        }
        Ok(Authorizer {
            rules,
            origin: origin.to_string(),
        })
    }

    /// Where the rules came from, for the start-up log.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether any rule grants `identity` the `permission` on `action` at `target`.
    pub fn allows(
        &self,
        identity: &str,
        permission: Permission,
        action: &str,
        target: &Target,
    ) -> bool {
        self.rules.iter().any(|rule| {
            let granted = match permission {
                Permission::Run => rule.run,
                Permission::Approve => rule.approve,
                Permission::Read => rule.run || rule.approve,
            };
            granted
                && (rule.identity == "*" || rule.identity == identity)
                && rule.actions.iter().any(|p| matches(p, action))
                && rule
                    .namespaces
                    .iter()
                    .any(|p| matches(p, &target.namespace))
                && rule.clusters.iter().any(|p| matches(p, &target.cluster))
        })
    }

    /// [`Authorizer::allows`], or [`EngineError::PermissionDenied`] saying who may not do
    /// what where (`alice may not run drain_node in production`).
    ///
    /// # Errors
    /// When no rule allows it.
    pub fn check(
        &self,
        identity: &str,
        permission: Permission,
        action: &str,
        target: &Target,
    ) -> Result<(), EngineError> {
        if self.allows(identity, permission, action, target) {
            return Ok(());
        }
        let place = if target.namespace.is_empty() {
            format!("on {}/{}", target.kind.to_lowercase(), target.name)
        } else {
            format!("in {}", target.namespace)
        };
        let cluster = if target.cluster.is_empty() {
            String::new()
        } else {
            format!(" (cluster {})", target.cluster)
        };
        Err(EngineError::PermissionDenied(format!(
            "{identity} may not {} {action} {place}{cluster}",
            permission.verb()
        )))
    }
}

/// `*` matches anything, `prefix*` what starts with `prefix`, anything else only itself.
fn matches(pattern: &str, value: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => value.starts_with(prefix),
        None => pattern == value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KNOWN: &[&str] = &[
        "scale_deployment",
        "restart_pod",
        "drain_node",
        "collect_diagnostics",
    ];

    fn mk_target(namespace: &str) -> Target {
        Target {
            cluster: String::new(),
            namespace: namespace.to_string(),
            kind: if namespace.is_empty() {
                "Node"
            } else {
                "Deployment"
            }
            .to_string(),
            name: "web".to_string(),
        }
    }

    fn mk_authorizer(yaml: &str) -> Authorizer {
        Authorizer::from_yaml(yaml, "test", KNOWN).expect("valid rules")
    }

    const RULES: &str = r#"
rules:
  - identity: alice
    actions: [scale_deployment, restart_pod]
    namespaces: [staging, "team-*"]
  - identity: oncall
    actions: ["*"]
    namespaces: ["*"]
    approve: true
  - identity: lead
    actions: ["*"]
    namespaces: [production]
    run: false
    approve: true
"#;

    #[test]
    fn an_identity_runs_only_the_listed_actions_in_the_listed_namespaces() {
        let authz = mk_authorizer(RULES);
        assert!(authz.allows(
            "alice",
            Permission::Run,
            "scale_deployment",
            &mk_target("staging")
        ));
        assert!(authz.allows(
            "alice",
            Permission::Run,
            "restart_pod",
            &mk_target("team-web")
        ));
        assert!(!authz.allows(
            "alice",
            Permission::Run,
            "scale_deployment",
            &mk_target("production")
        ));
        assert!(!authz.allows(
            "alice",
            Permission::Run,
            "drain_node",
            &mk_target("staging")
        ));
        assert!(!authz.allows(
            "mallory",
            Permission::Run,
            "restart_pod",
            &mk_target("staging")
        ));
    }

    #[test]
    fn cluster_scoped_targets_need_a_wildcard_namespace() {
        let authz = mk_authorizer(RULES);
        assert!(!authz.allows("alice", Permission::Run, "restart_pod", &mk_target("")));
        assert!(authz.allows("oncall", Permission::Run, "drain_node", &mk_target("")));
    }

    #[test]
    fn approval_is_a_separate_grant() {
        let authz = mk_authorizer(RULES);
        assert!(!authz.allows(
            "alice",
            Permission::Approve,
            "scale_deployment",
            &mk_target("staging")
        ));
        assert!(authz.allows("oncall", Permission::Approve, "drain_node", &mk_target("")));
        assert!(authz.allows(
            "lead",
            Permission::Approve,
            "scale_deployment",
            &mk_target("production")
        ));
        assert!(!authz.allows(
            "lead",
            Permission::Run,
            "scale_deployment",
            &mk_target("production")
        ));
    }

    #[test]
    fn a_denial_says_who_may_not_do_what_where() {
        let authz = mk_authorizer(RULES);
        let err = authz
            .check(
                "alice",
                Permission::Run,
                "drain_node",
                &mk_target("production"),
            )
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "alice may not run drain_node in production"
        );
        let err = authz
            .check("alice", Permission::Run, "drain_node", &mk_target(""))
            .unwrap_err();
        assert_eq!(err.to_string(), "alice may not run drain_node on node/web");
    }

    #[test]
    fn rules_can_be_limited_to_clusters() {
        let authz = mk_authorizer(
            "rules: [{identity: bob, actions: ['*'], namespaces: ['*'], clusters: [staging-eu]}]",
        );
        let mut target = mk_target("web");
        assert!(!authz.allows("bob", Permission::Run, "restart_pod", &target));
        target.cluster = "staging-eu".into();
        assert!(authz.allows("bob", Permission::Run, "restart_pod", &target));
    }

    #[test]
    fn json_is_accepted_too() {
        let authz = mk_authorizer(
            r#"{"rules": [{"identity": "*", "actions": ["collect_*"], "namespaces": ["*"]}]}"#,
        );
        assert!(authz.allows(
            "anyone",
            Permission::Run,
            "collect_diagnostics",
            &mk_target("prod")
        ));
        assert!(!authz.allows("anyone", Permission::Run, "restart_pod", &mk_target("prod")));
    }

    #[test]
    fn mistakes_in_the_rules_fail_the_load() {
        let load = |yaml: &str| {
            Authorizer::from_yaml(yaml, "test", KNOWN)
                .unwrap_err()
                .to_string()
        };
        assert!(
            load("rules: [{identity: a, actions: [scale_deploymnet], namespaces: ['*']}]")
                .contains("scale_deploymnet")
        );
        assert!(
            load("rules: [{identity: '', actions: ['*'], namespaces: ['*']}]").contains("identity")
        );
        assert!(load("rules: [{identity: a, actions: [], namespaces: ['*']}]").contains("actions"));
        assert!(
            load("rules: [{identity: a, actions: ['*'], namespaces: []}]").contains("namespaces")
        );
        assert!(
            load("rules: [{identity: a, actions: ['*'], namespaces: ['*'], verbs: [x]}]")
                .contains("verbs")
        );
        assert!(load("rules: 5").contains("test"));
    }
}
