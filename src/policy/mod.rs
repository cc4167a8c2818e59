//! Policy: a Rego program (regorus) decides whether a request may run, must wait for an
//! approval, or is denied, with reasons. The built-in policy (`default.rego`) protects system
//! namespaces, caps replicas, never empties a cluster of schedulable nodes and sends high-risk
//! actions to approval; `--policy FILE` replaces it.

use std::{path::Path, sync::Mutex};

use serde_json::{json, Value};

/// The built-in policy.
pub const DEFAULT_POLICY: &str = include_str!("default.rego");
/// The rule every policy must define.
const DECISION_RULE: &str = "data.executor.decision";

/// Why a policy could not be loaded or evaluated.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The policy file could not be read or parsed, or lacks `data.executor.decision`.
    #[error("policy {origin}: {message}")]
    Load { origin: String, message: String },
    /// Evaluation failed or returned something that is not a decision.
    #[error("policy evaluation: {0}")]
    Eval(String),
}

/// Values the policy reads as `data.config`, set from flags.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PolicyConfig {
    pub protected_namespaces: Vec<String>,
    pub max_replicas: i64,
    pub min_schedulable_nodes_for_drain: i64,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            protected_namespaces: vec!["kube-system".into(), "kube-public".into()],
            max_replicas: crate::actions::MAX_REPLICAS,
            // Draining one of two nodes leaves a single point of failure.
            min_schedulable_nodes_for_drain: 3,
        }
    }
}

/// What the policy decided about one request.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Decision {
    pub allow: bool,
    pub require_approval: bool,
    pub reasons: Vec<String>,
}

impl Decision {
    /// `allow`, `deny` or `require_approval`.
    pub fn verdict(&self) -> &'static str {
        match (self.allow, self.require_approval) {
            (false, _) => "deny",
            (true, true) => "require_approval",
            (true, false) => "allow",
        }
    }

    pub fn to_json(&self) -> Value {
        json!({ "decision": self.verdict(), "reasons": self.reasons })
    }
}

/// Idle engines kept for reuse; more concurrent evaluations clone the template.
const MAX_IDLE_ENGINES: usize = 16;

/// A loaded policy, ready to evaluate.
pub struct Policy {
    /// Policy and data loaded and already prepared by one evaluation (regorus analyses the
    /// modules on an engine's first evaluation: far dearer than evaluating), so its clones
    /// start prepared.
    template: Mutex<regorus::Engine>,
    /// Engines returned after an evaluation, reused instead of cloning the template.
    idle: Mutex<Vec<regorus::Engine>>,
    origin: String,
}

impl Policy {
    /// The built-in policy with `config`.
    ///
    /// # Errors
    /// Never for the shipped policy; kept for symmetry with [`Policy::from_file`].
    pub fn builtin(config: &PolicyConfig) -> Result<Self, PolicyError> {
        Self::new("built-in default.rego", DEFAULT_POLICY, config)
    }

    /// A policy from a Rego file.
    ///
    /// # Errors
    /// [`PolicyError::Load`] when it cannot be read, parsed or evaluated on a sample input.
    pub fn from_file(path: &Path, config: &PolicyConfig) -> Result<Self, PolicyError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| PolicyError::Load {
            origin: origin.clone(),
            message: e.to_string(),
        })?;
        Self::new(&origin, &text, config)
    }

    fn new(origin: &str, rego: &str, config: &PolicyConfig) -> Result<Self, PolicyError> {
        let load = |message: String| PolicyError::Load {
            origin: origin.to_string(),
            message,
        };
        let mut engine = regorus::Engine::new();
        engine
            .add_policy(origin.to_string(), rego.to_string())
            .map_err(|e| load(e.to_string()))?;
        let data =
            serde_json::to_string(&json!({ "config": config })).map_err(|e| load(e.to_string()))?;
        engine
            .add_data_json(&data)
            .map_err(|e| load(e.to_string()))?;
        // Fail at start, not on the first request, when the rule is missing or malformed; and
        // prepare the template on the way.
        evaluate_with(
            &mut engine,
            &json!({
                "action": "notify_only", "risk": "low", "read_only": true,
                "target": {"cluster": "", "namespace": "default", "kind": "Deployment", "name": "probe"},
                "parameters": {}, "requester": "anonymous", "changes": [], "cluster": {}
            }),
        )
        .map_err(|e| load(e.to_string()))?;
        let policy = Policy {
            template: Mutex::new(engine),
            idle: Mutex::new(Vec::new()),
            origin: origin.to_string(),
        };
        Ok(policy)
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Evaluates `data.executor.decision` for `input`.
    ///
    /// # Errors
    /// [`PolicyError::Eval`] when evaluation fails or the result is not a decision.
    pub fn evaluate(&self, input: &Value) -> Result<Decision, PolicyError> {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut engine = idle.unwrap_or_else(|| {
            self.template
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
        });
        let decision = evaluate_with(&mut engine, input);
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE_ENGINES {
            idle.push(engine);
        }
        decision
    }
}

fn evaluate_with(engine: &mut regorus::Engine, input: &Value) -> Result<Decision, PolicyError> {
    use serde::Deserialize;
    let input = regorus::Value::deserialize(input).map_err(|e| PolicyError::Eval(e.to_string()))?;
    engine.set_input(input);
    let result = engine
        .eval_rule(DECISION_RULE.to_string())
        .map_err(|e| PolicyError::Eval(e.to_string()))?;
    let text = result
        .to_json_str()
        .map_err(|e| PolicyError::Eval(e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| {
        PolicyError::Eval(format!(
            "{DECISION_RULE} is not {{allow, require_approval, reasons}}: {e}: {text}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_input(action: &str, risk: &str, namespace: &str, kind: &str) -> Value {
        json!({
            "action": action, "risk": risk, "read_only": false,
            "target": {"cluster": "", "namespace": namespace, "kind": kind, "name": "x"},
            "parameters": {}, "requester": "alice", "changes": [],
            "cluster": {"schedulable_nodes": 3, "target_node_schedulable": true}
        })
    }

    #[test]
    fn the_default_policy_denies_protected_namespaces() {
        let policy = Policy::builtin(&PolicyConfig::default()).unwrap();
        let d = policy
            .evaluate(&mk_input(
                "scale_deployment",
                "medium",
                "kube-system",
                "Deployment",
            ))
            .unwrap();
        assert!(!d.allow);
        assert_eq!(
            d.reasons,
            vec!["namespace kube-system is protected: no changes are made there"]
        );
        let d = policy
            .evaluate(&mk_input(
                "scale_deployment",
                "medium",
                "production",
                "Deployment",
            ))
            .unwrap();
        assert_eq!(d.verdict(), "allow");
    }

    #[test]
    fn the_default_policy_guards_the_last_schedulable_nodes() {
        let policy = Policy::builtin(&PolicyConfig::default()).unwrap();
        let mut input = mk_input("cordon_node", "medium", "default", "Node");
        input["cluster"]["schedulable_nodes"] = json!(1);
        let d = policy.evaluate(&input).unwrap();
        assert!(
            !d.allow && d.reasons[0].contains("last schedulable node"),
            "{d:?}"
        );
        let mut input = mk_input("drain_node", "high", "default", "Node");
        input["cluster"]["schedulable_nodes"] = json!(2);
        let d = policy.evaluate(&input).unwrap();
        assert!(
            !d.allow && d.reasons[0].contains("at least 3 schedulable nodes"),
            "{d:?}"
        );
    }

    #[test]
    fn high_risk_actions_need_approval() {
        let policy = Policy::builtin(&PolicyConfig::default()).unwrap();
        let d = policy
            .evaluate(&mk_input("drain_node", "high", "default", "Node"))
            .unwrap();
        assert_eq!(d.verdict(), "require_approval");
    }

    #[test]
    fn a_replica_ceiling_reads_the_planned_object() {
        let policy = Policy::builtin(&PolicyConfig {
            max_replicas: 10,
            ..Default::default()
        })
        .unwrap();
        let mut input = mk_input("scale_deployment", "medium", "production", "Deployment");
        input["changes"] =
            json!([{"object": "production/deployment/web", "after": {"spec": {"replicas": 12}}}]);
        let d = policy.evaluate(&input).unwrap();
        assert!(
            !d.allow && d.reasons[0].contains("above the ceiling of 10"),
            "{d:?}"
        );
    }

    #[test]
    fn a_policy_without_the_decision_rule_is_refused_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.rego");
        std::fs::write(&path, "package other\nx := 1\n").unwrap();
        assert!(Policy::from_file(&path, &PolicyConfig::default()).is_err());
    }
}
