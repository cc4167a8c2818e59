//! Runtime fault injection: added latency and error answers per verb and resource, so
//! reliability tests can see how clients cope with a slow or failing API server.
//!
//! Tests add [`FaultRule`]s through [`super::SimCluster::faults`]; people add them on the
//! command line (`executor-service sim --fault RULE`, `serve --sim-fault RULE`) in the text
//! form [`FaultRule`] parses and prints: `verb=patch,resource=deployments,probability=0.2,code=503`.
//! Every verb is covered, `watch` included: a watch suffers its fault when it is opened.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::errors::ApiError;
use super::resources::{by_plural, ResourceDef, VERBS_ALL};

/// The statuses a rule may answer with. 403 and 404 are the ones no retry heals (permission
/// withdrawn, object gone); the rest are the transient ones clients must ride out.
pub const ERROR_STATUSES: &[u16] = &[403, 404, 409, 429, 500, 503];
/// The keys of the text form, in the order it is printed.
const KEYS: &str = "verb, resource, probability, code, latency, count";
/// `Retry-After` seconds sent with an injected 429 or 503, as API priority and fairness does.
const RETRY_AFTER_SECS: u32 = 1;

/// One fault. A request matches when `verb` and `resource` match (or are `None`); it then
/// suffers the fault with `probability`, at most `count` times in total.
///
/// Text form (the `FromStr` and `Display` impls): comma-separated `key=value` pairs,
/// `verb=watch,resource=deployments,latency=200ms,code=503,probability=0.5,count=3`.
/// `code` or `latency` is required; `probability` defaults to 1.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultRule {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`;
    /// `None` matches every verb.
    pub verb: Option<String>,
    /// Plural resource (`pods`), optionally with a subresource (`pods/eviction`,
    /// `deployments/scale`); a bare plural also matches its subresources. `None` matches all.
    pub resource: Option<String>,
    /// Delay added before the request is served (or failed).
    pub latency: Option<Duration>,
    /// Answer with this status instead of serving: one of [`ERROR_STATUSES`] — 403
    /// (Forbidden), 404 (NotFound), 409 (Conflict), 429, 500 or 503.
    pub error_status: Option<u16>,
    /// Chance in `[0, 1]` that a matching request is affected.
    pub probability: f64,
    /// How many requests may be affected before the rule goes quiet; `None` = unlimited.
    pub count: Option<u32>,
}

/// Why the text form of a [`FaultRule`] was refused; each message names the key at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FaultRuleError {
    /// A part that is not `key=value`.
    #[error("{part:?} is not KEY=VALUE (keys: {KEYS})")]
    NotKeyValue { part: String },
    /// A key the syntax does not have.
    #[error("unknown key {key:?} (keys: {KEYS})")]
    UnknownKey { key: String },
    /// A key given twice.
    #[error("{key}: given twice")]
    Repeated { key: &'static str },
    /// A value its key does not accept.
    #[error("{key}: {value:?} {why}")]
    BadValue {
        key: &'static str,
        value: String,
        why: String,
    },
    /// Neither `code` nor `latency`: the rule would change nothing.
    #[error("no effect: give code (an error status) and/or latency (a delay)")]
    NoEffect,
}

fn bad(key: &'static str, value: &str, why: impl Into<String>) -> FaultRuleError {
    FaultRuleError::BadValue {
        key,
        value: value.to_string(),
        why: why.into(),
    }
}

fn parse_verb(value: &str) -> Result<String, FaultRuleError> {
    if VERBS_ALL.contains(&value) {
        Ok(value.to_string())
    } else {
        Err(bad(
            "verb",
            value,
            format!("is not a verb (one of {})", VERBS_ALL.join(", ")),
        ))
    }
}

/// A plural the simulated cluster serves, optionally with one of its subresources: a typo
/// (`deployment`) would otherwise make a rule that silently never fires.
fn parse_resource(value: &str) -> Result<String, FaultRuleError> {
    let (plural, sub) = match value.split_once('/') {
        Some((p, s)) => (p, Some(s)),
        None => (value, None),
    };
    let def = by_plural(plural).ok_or_else(|| {
        bad(
            "resource",
            value,
            "is not a resource the simulated cluster serves (give the plural: pods, deployments, ...)",
        )
    })?;
    if let Some(sub) = sub {
        if !def.has_sub(sub) {
            let subs: Vec<&str> = def.subresources.iter().map(|s| s.name).collect();
            return Err(bad(
                "resource",
                value,
                format!(
                    "{plural} has no subresource {sub:?} (has: {})",
                    subs.join(", ")
                ),
            ));
        }
    }
    Ok(value.to_string())
}

fn parse_probability(value: &str) -> Result<f64, FaultRuleError> {
    match value.parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(bad("probability", value, "is not a number from 0 to 1")),
    }
}

fn parse_code(value: &str) -> Result<u16, FaultRuleError> {
    match value.parse::<u16>() {
        Ok(c) if ERROR_STATUSES.contains(&c) => Ok(c),
        _ => {
            let codes: Vec<String> = ERROR_STATUSES.iter().map(u16::to_string).collect();
            Err(bad(
                "code",
                value,
                format!("is not one of {}", codes.join(", ")),
            ))
        }
    }
}

fn parse_latency(value: &str) -> Result<Duration, FaultRuleError> {
    match humantime::parse_duration(value) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err(bad("latency", value, "must be longer than zero")),
        Err(e) => Err(bad(
            "latency",
            value,
            format!("is not a duration like 200ms or 2s ({e})"),
        )),
    }
}

fn parse_count(value: &str) -> Result<u32, FaultRuleError> {
    match value.parse::<u32>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(bad("count", value, "is not a whole number of at least 1")),
    }
}

/// Stores a parsed value, refusing a key given twice.
fn once<T>(slot: &mut Option<T>, key: &'static str, value: T) -> Result<(), FaultRuleError> {
    if slot.is_some() {
        return Err(FaultRuleError::Repeated { key });
    }
    *slot = Some(value);
    Ok(())
}

impl FromStr for FaultRule {
    type Err = FaultRuleError;

    /// Parses `key=value,...`; see [`FaultRule`] for the keys.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut rule = FaultRule::default();
        let mut probability = None;
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = part
                .split_once('=')
                .map(|(k, v)| (k.trim(), v.trim()))
                .ok_or_else(|| FaultRuleError::NotKeyValue {
                    part: part.to_string(),
                })?;
            match key {
                "verb" => once(&mut rule.verb, "verb", parse_verb(value)?)?,
                "resource" => once(&mut rule.resource, "resource", parse_resource(value)?)?,
                "probability" => once(&mut probability, "probability", parse_probability(value)?)?,
                "code" => once(&mut rule.error_status, "code", parse_code(value)?)?,
                "latency" => once(&mut rule.latency, "latency", parse_latency(value)?)?,
                "count" => once(&mut rule.count, "count", parse_count(value)?)?,
                _ => {
                    return Err(FaultRuleError::UnknownKey {
                        key: key.to_string(),
                    })
                }
            }
        }
        if rule.error_status.is_none() && rule.latency.is_none() {
            return Err(FaultRuleError::NoEffect);
        }
        rule.probability = probability.unwrap_or(1.0);
        Ok(rule)
    }
}

impl fmt::Display for FaultRule {
    /// The text form [`FromStr`] reads back, defaults left out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(v) = &self.verb {
            parts.push(format!("verb={v}"));
        }
        if let Some(r) = &self.resource {
            parts.push(format!("resource={r}"));
        }
        if self.probability < 1.0 {
            parts.push(format!("probability={}", self.probability));
        }
        if let Some(c) = self.error_status {
            parts.push(format!("code={c}"));
        }
        if let Some(l) = self.latency {
            parts.push(format!("latency={}", humantime::format_duration(l)));
        }
        if let Some(n) = self.count {
            parts.push(format!("count={n}"));
        }
        f.write_str(&parts.join(","))
    }
}

/// Cloneable handle to the cluster's fault rules, and the count of what they did.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    rules: Vec<FaultRule>,
    stats: FaultStats,
}

/// What the rules did since the cluster started (clearing the rules keeps the counts): what a
/// reliability run reports as the faults it survived, reads and watches included, which the
/// record of writes does not hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultStats {
    /// Requests the rules were asked about: every API request with a known resource and verb.
    pub requests: u64,
    /// Requests answered late on purpose.
    pub delayed: u64,
    /// Requests answered with an injected error, by status.
    pub errors: BTreeMap<u16, u64>,
}

impl FaultStats {
    /// Requests answered with an injected error, all statuses together.
    pub fn error_total(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// What the server must do to one request.
#[derive(Debug, Default, PartialEq)]
pub struct Injected {
    pub latency: Duration,
    pub error_status: Option<u16>,
}

impl Injected {
    /// The `Status` error to answer instead of serving, worded as the real API server words
    /// it (an RBAC denial for 403), with `(injected fault)` so nobody mistakes it for a bug.
    /// `name` is empty for collection requests (list, watch, create).
    pub fn error(
        &self,
        def: &ResourceDef,
        resource: &str,
        verb: &str,
        namespace: &str,
        name: &str,
    ) -> Option<ApiError> {
        let code = self.error_status?;
        let err = match code {
            403 => {
                let object = if name.is_empty() {
                    def.qualified()
                } else {
                    format!("{} {name:?}", def.qualified())
                };
                let scope = if namespace.is_empty() {
                    String::new()
                } else {
                    format!(" in the namespace {namespace:?}")
                };
                let mut err = ApiError::new(
                    403,
                    "Forbidden",
                    format!(
                        "{object} is forbidden: User \"system:anonymous\" cannot {verb} resource {resource:?} in API group {:?}{scope} (injected fault)",
                        def.group
                    ),
                );
                err.details = Some(serde_json::json!({"name": name, "group": def.group, "kind": def.plural}));
                err
            }
            404 if !name.is_empty() => {
                let mut err = ApiError::not_found(def, name);
                err.message.push_str(" (injected fault)");
                err
            }
            404 => ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource (injected fault)",
            ),
            409 => ApiError::conflict(def, name),
            429 => ApiError::new(429, "TooManyRequests", "the server has received too many requests and has asked us to try again later (injected fault)"),
            503 => ApiError::new(503, "ServiceUnavailable", "the server is currently unable to handle the request (injected fault)"),
            c => ApiError::new(c, "InternalError", "an error on the server (\"injected fault\") has prevented the request from succeeding"),
        };
        Some(ApiError {
            retry_after: matches!(code, 429 | 503).then_some(RETRY_AFTER_SECS),
            ..err
        })
    }
}

impl Faults {
    pub fn add(&self, rule: FaultRule) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.rules.push(rule);
        }
    }

    /// Removes every rule; the counts of [`Faults::stats`] stay.
    pub fn clear(&self) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.rules.clear();
        }
    }

    /// What the rules did so far.
    pub fn stats(&self) -> FaultStats {
        self.inner
            .lock()
            .map(|inner| inner.stats.clone())
            .unwrap_or_default()
    }

    /// Decides the faults for a request with `verb` on `resource` (`plural` or `plural/sub`).
    pub fn check(&self, verb: &str, resource: &str) -> Injected {
        let mut out = Injected::default();
        let Ok(mut inner) = self.inner.lock() else {
            return out;
        };
        let Inner { rules, stats } = &mut *inner;
        stats.requests += 1;
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
        if !out.latency.is_zero() {
            stats.delayed += 1;
        }
        if let Some(code) = out.error_status {
            *stats.errors.entry(code).or_default() += 1;
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
        let stats = f.stats();
        assert_eq!((stats.requests, stats.delayed), (6, 1));
        assert_eq!(stats.errors, BTreeMap::from([(503, 1)]), "kept after clear");
    }

    fn parse(text: &str) -> Result<FaultRule, FaultRuleError> {
        text.parse()
    }

    fn error_of(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn rules_parse_from_their_text_form() {
        assert_eq!(
            parse("verb=patch,resource=deployments,probability=0.2,code=503").unwrap(),
            FaultRule {
                verb: Some("patch".into()),
                resource: Some("deployments".into()),
                error_status: Some(503),
                probability: 0.2,
                ..Default::default()
            }
        );
        assert_eq!(
            parse("verb=watch,latency=200ms").unwrap(),
            FaultRule {
                verb: Some("watch".into()),
                latency: Some(Duration::from_millis(200)),
                probability: 1.0,
                ..Default::default()
            }
        );
        assert_eq!(
            parse(" resource = pods/eviction , code=429, count=3 ,latency=1s").unwrap(),
            FaultRule {
                resource: Some("pods/eviction".into()),
                error_status: Some(429),
                latency: Some(Duration::from_secs(1)),
                count: Some(3),
                probability: 1.0,
                ..Default::default()
            }
        );
        for code in ERROR_STATUSES {
            assert_eq!(
                parse(&format!("code={code}")).unwrap().error_status,
                Some(*code)
            );
        }
    }

    #[test]
    fn a_rule_prints_as_the_text_it_parses_from() {
        for text in [
            "verb=patch,resource=deployments,probability=0.2,code=503",
            "verb=watch,latency=200ms",
            "resource=deployments/scale,code=409,latency=1s 500ms,count=2",
        ] {
            let rule = parse(text).unwrap();
            assert_eq!(rule.to_string(), text);
            assert_eq!(parse(&rule.to_string()).unwrap(), rule);
        }
    }

    #[test]
    fn each_bad_rule_is_refused_naming_its_key() {
        assert_eq!(
            error_of("verb=get,colour=red,code=503"),
            "unknown key \"colour\" (keys: verb, resource, probability, code, latency, count)"
        );
        assert!(error_of("verb=pach,code=503").starts_with("verb: \"pach\" is not a verb"));
        assert!(error_of("resource=deployment,code=503")
            .starts_with("resource: \"deployment\" is not a resource"));
        assert!(error_of("resource=deployments/exec,code=503")
            .contains("deployments has no subresource \"exec\""));
        for p in ["1.5", "-0.1", "often", "NaN"] {
            assert!(
                error_of(&format!("code=503,probability={p}")).starts_with("probability: "),
                "{p}"
            );
        }
        assert_eq!(
            error_of("code=418"),
            "code: \"418\" is not one of 403, 404, 409, 429, 500, 503"
        );
        assert!(error_of("latency=soon").starts_with("latency: \"soon\" is not a duration"));
        assert!(error_of("latency=0s").starts_with("latency: \"0s\" must be longer than zero"));
        assert!(error_of("code=503,count=0").starts_with("count: \"0\""));
        assert!(error_of("code=503,count=many").starts_with("count: \"many\""));
        assert_eq!(error_of("code=503,code=500"), "code: given twice");
        assert!(error_of("verb=get,503").starts_with("\"503\" is not KEY=VALUE"));
        let no_effect = "no effect: give code (an error status) and/or latency (a delay)";
        assert_eq!(error_of("verb=get,resource=pods"), no_effect);
        assert_eq!(error_of(""), no_effect);
    }

    #[test]
    fn injected_403_and_404_read_like_the_real_servers() {
        let deployments = by_plural("deployments").unwrap();
        let forbidden = Injected {
            error_status: Some(403),
            ..Default::default()
        };
        let err = forbidden
            .error(deployments, "deployments", "watch", "production", "")
            .unwrap();
        assert_eq!((err.code, err.reason), (403, "Forbidden"));
        assert_eq!(
            err.message,
            "deployments.apps is forbidden: User \"system:anonymous\" cannot watch resource \"deployments\" in API group \"apps\" in the namespace \"production\" (injected fault)"
        );
        let gone = Injected {
            error_status: Some(404),
            ..Default::default()
        };
        let err = gone
            .error(deployments, "deployments", "get", "production", "web")
            .unwrap();
        assert_eq!((err.code, err.reason), (404, "NotFound"));
        assert_eq!(
            err.message,
            "deployments.apps \"web\" not found (injected fault)"
        );
        let unavailable = Injected {
            error_status: Some(503),
            ..Default::default()
        };
        let err = unavailable
            .error(deployments, "deployments", "get", "production", "web")
            .unwrap();
        assert_eq!((err.code, err.retry_after), (503, Some(RETRY_AFTER_SECS)));
        assert!(Injected::default()
            .error(deployments, "deployments", "get", "production", "web")
            .is_none());
    }
}
