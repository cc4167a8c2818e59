//! Runtime fault injection: added latency and error answers per verb and resource, so
//! reliability tests can see how clients cope with a slow or failing API server.

use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One fault. A request matches when `verb` and `resource` match (or are `None`); it then
/// suffers the fault with `probability`, at most `count` times in total.
#[derive(Debug, Clone, Default)]
pub struct FaultRule {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`;
    /// `None` matches every verb.
    pub verb: Option<String>,
    /// Plural resource (`pods`), optionally with a subresource (`pods/eviction`,
    /// `deployments/scale`); a bare plural also matches its subresources. `None` matches all.
    pub resource: Option<String>,
    /// Delay added before the request is served (or failed).
    pub latency: Option<Duration>,
    /// Answer with this status instead of serving: 500, 503, 429 or 409 (Conflict).
    pub error_status: Option<u16>,
    /// Chance in `[0, 1]` that a matching request is affected.
    pub probability: f64,
    /// How many requests may be affected before the rule goes quiet; `None` = unlimited.
    pub count: Option<u32>,
}

/// Cloneable handle to the cluster's fault rules.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    rules: Arc<Mutex<Vec<FaultRule>>>,
}

/// What the server must do to one request.
#[derive(Debug, Default, PartialEq)]
pub struct Injected {
    pub latency: Duration,
    pub error_status: Option<u16>,
}

impl Faults {
    pub fn add(&self, rule: FaultRule) {
        if let Ok(mut r) = self.rules.lock() {
            r.push(rule);
        }
    }

    pub fn clear(&self) {
        if let Ok(mut r) = self.rules.lock() {
            r.clear();
        }
    }

    /// Decides the faults for a request with `verb` on `resource` (`plural` or `plural/sub`).
    pub fn check(&self, verb: &str, resource: &str) -> Injected {
        let mut out = Injected::default();
        let Ok(mut rules) = self.rules.lock() else {
            return out;
        };
        for rule in rules.iter_mut() {
            if rule.count == Some(0) {
                continue;
            }
            if rule.verb.as_deref().is_some_and(|v| v != verb) {
                continue;
            }
            if let Some(r) = rule.resource.as_deref() {
                let plural = resource.split('/').next().unwrap_or("");
                if r != resource && r != plural {
                    continue;
                }
            }
            if rule.probability < 1.0 && rand::random::<f64>() >= rule.probability {
                continue;
            }
            if let Some(c) = rule.count.as_mut() {
                *c -= 1;
            }
            if let Some(l) = rule.latency {
                out.latency += l;
            }
            if out.error_status.is_none() {
                out.error_status = rule.error_status;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_match_by_verb_and_resource_and_run_out() {
        let f = Faults::default();
        f.add(FaultRule {
            verb: Some("get".into()),
            resource: Some("pods".into()),
            error_status: Some(503),
            probability: 1.0,
            count: Some(1),
            ..Default::default()
        });
        assert_eq!(f.check("list", "pods").error_status, None);
        assert_eq!(f.check("get", "nodes").error_status, None);
        assert_eq!(f.check("get", "pods/log").error_status, Some(503));
        assert_eq!(f.check("get", "pods").error_status, None, "count exhausted");
        f.add(FaultRule {
            latency: Some(Duration::from_millis(5)),
            probability: 1.0,
            ..Default::default()
        });
        assert_eq!(
            f.check("patch", "deployments").latency,
            Duration::from_millis(5)
        );
        f.clear();
        assert_eq!(f.check("patch", "deployments"), Injected::default());
    }
}
