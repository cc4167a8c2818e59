//! Label selectors (string form from `?labelSelector=` and the structured `LabelSelector` of
//! workload specs) and field selectors.

use serde_json::{Map, Value};

use super::store::at;

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq)]
pub enum Req {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector: all requirements must hold. Empty selects everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector {
    pub reqs: Vec<Req>,
    /// A structured selector of `null` matches nothing (unlike `{}`, which matches everything).
    pub nothing: bool,
}

impl LabelSelector {
    /// Parses the string form: `a=b,c!=d,e in (x,y),f notin (z),g,!h`.
    ///
    /// # Errors
    /// A message suitable for a `400 BadRequest` when the syntax is wrong.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for part in split_top_level(s) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            reqs.push(parse_req(part)?);
        }
        Ok(LabelSelector {
            reqs,
            nothing: false,
        })
    }

    /// Builds from a structured `metav1.LabelSelector` (`matchLabels` + `matchExpressions`).
    pub fn from_json(v: Option<&Value>) -> Self {
        let Some(v) = v.filter(|v| v.is_object()) else {
            return LabelSelector {
                reqs: vec![],
                nothing: true,
            };
        };
        let mut reqs = Vec::new();
        if let Some(m) = v.get("matchLabels").and_then(Value::as_object) {
            for (k, val) in m {
                reqs.push(Req::Eq(k.clone(), val.as_str().unwrap_or("").to_string()));
            }
        }
        if let Some(exprs) = v.get("matchExpressions").and_then(Value::as_array) {
            for e in exprs {
                let key = e
                    .get("key")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                let vals: Vec<String> = e
                    .get("values")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                match e.get("operator").and_then(Value::as_str).unwrap_or("") {
                    "In" => reqs.push(Req::In(key, vals)),
                    "NotIn" => reqs.push(Req::NotIn(key, vals)),
                    "Exists" => reqs.push(Req::Exists(key)),
                    "DoesNotExist" => reqs.push(Req::NotExists(key)),
                    _ => {}
                }
            }
        }
        LabelSelector {
            reqs,
            nothing: false,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty() && !self.nothing
    }

    /// Whether a label map (`metadata.labels`, possibly absent) satisfies the selector.
    pub fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        if self.nothing {
            return false;
        }
        let get = |k: &str| labels.and_then(|m| m.get(k)).and_then(Value::as_str);
        self.reqs.iter().all(|r| match r {
            Req::Eq(k, v) => get(k) == Some(v.as_str()),
            Req::NotEq(k, v) => get(k) != Some(v.as_str()),
            Req::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Req::NotIn(k, vs) => get(k).is_none_or(|x| !vs.iter().any(|v| v == x)),
            Req::Exists(k) => get(k).is_some(),
            Req::NotExists(k) => get(k).is_none(),
        })
    }

    /// Whether an object's `metadata.labels` satisfy the selector.
    pub fn matches_obj(&self, obj: &Value) -> bool {
        self.matches(at(obj, "/metadata/labels").and_then(Value::as_object))
    }

    /// The string form, as `Scale.status.selector` carries it.
    pub fn to_string_form(&self) -> String {
        let parts: Vec<String> = self
            .reqs
            .iter()
            .map(|r| match r {
                Req::Eq(k, v) => format!("{k}={v}"),
                Req::NotEq(k, v) => format!("{k}!={v}"),
                Req::In(k, vs) => format!("{k} in ({})", vs.join(",")),
                Req::NotIn(k, vs) => format!("{k} notin ({})", vs.join(",")),
                Req::Exists(k) => k.clone(),
                Req::NotExists(k) => format!("!{k}"),
            })
            .collect();
        parts.join(",")
    }
}

/// Splits on commas that are not inside parentheses.
fn split_top_level(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 317
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

fn parse_set(rest: &str) -> Result<Vec<String>, String> {
    let rest = rest.trim();
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| {
            format!("unable to parse requirement: expected a set in parentheses, found {rest:?}")
        })?;
    Ok(inner
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect())
}

fn parse_req(part: &str) -> Result<Req, String> {
    let bad = |k: &str| format!("unable to parse requirement: invalid label key {k:?}");
    if let Some(k) = part.strip_prefix('!') {
        let k = k.trim();
        return if valid_key(k) {
            Ok(Req::NotExists(k.to_string()))
        } else {
            Err(bad(k))
        };
    }
    for (op, ne) in [("!=", true), ("==", false), ("=", false)] {
        if let Some((k, v)) = part.split_once(op) {
            let (k, v) = (k.trim(), v.trim());
            if !valid_key(k) {
                return Err(bad(k));
            }
            return Ok(if ne {
                Req::NotEq(k.into(), v.into())
            } else {
                Req::Eq(k.into(), v.into())
            });
        }
    }
    let words: Vec<&str> = part.splitn(2, char::is_whitespace).collect();
    if words.len() == 2 {
        let k = words[0].trim();
        let rest = words[1].trim();
        if !valid_key(k) {
            return Err(bad(k));
        }
        if let Some(r) = rest.strip_prefix("notin") {
            return Ok(Req::NotIn(k.into(), parse_set(r)?));
        }
        if let Some(r) = rest.strip_prefix("in") {
            return Ok(Req::In(k.into(), parse_set(r)?));
        }
        return Err(format!(
            "unable to parse requirement: found '{rest}', expected: in, notin, =, ==, !=, gt, lt"
        ));
    }
    if valid_key(part) {
        Ok(Req::Exists(part.to_string()))
    } else {
        Err(bad(part))
    }
}

/// A parsed field selector: `path=value` / `path!=value` terms, all of which must hold.
#[derive(Debug, Clone, Default)]
pub struct FieldSelector {
    terms: Vec<(String, String, bool)>,
}

impl FieldSelector {
    /// # Errors
    /// A message for `400 BadRequest` when a term has no operator.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut terms = Vec::new();
        for part in s.split(',') {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let (k, v, neg) = if let Some((k, v)) = part.split_once("!=") {
                (k, v, true)
            } else if let Some((k, v)) = part.split_once("==") {
                (k, v, false)
            } else if let Some((k, v)) = part.split_once('=') {
                (k, v, false)
            } else {
                return Err(format!(
                    "invalid selector: '{part}'; can't understand '{part}'"
                ));
            };
            terms.push((k.trim().to_string(), v.trim().to_string(), neg));
        }
        Ok(FieldSelector { terms })
    }

    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// The value a term `path=value` requires, if the selector has exactly such an equality
    /// (used to answer `metadata.name=X` lookups without a scan).
    pub fn equality(&self, path: &str) -> Option<&str> {
        self.terms
            .iter()
            .find(|(k, _, neg)| k == path && !neg)
            .map(|(_, v, _)| v.as_str())
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.terms.iter().all(|(k, v, neg)| {
            let actual = field_value(obj, k);
            (actual == *v) != *neg
        })
    }
}

/// The string value of a dotted field path, as the API server's field-label conversion gives
/// it: missing fields are `""`, except booleans that default to `false`.
fn field_value(obj: &Value, path: &str) -> String {
    let ptr = format!("/{}", path.replace('.', "/"));
    match at(obj, &ptr) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        Some(_) => String::new(),
        None if path == "spec.unschedulable" => "false".to_string(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn string_selectors_cover_every_operator() {
        let l = labels(json!({"app": "web", "tier": "front", "env": "prod"}));
        let ok = [
            "app=web",
            "app==web",
            "app!=api",
            "tier in (front, back)",
            "env notin (dev,staging)",
            "app",
            "!missing",
            "app=web,tier=front",
            "",
        ];
        for s in ok {
            assert!(LabelSelector::parse(s).unwrap().matches(Some(&l)), "{s}");
        }
        let no = [
            "app=api",
            "app!=web",
            "tier in (back)",
            "env notin (prod)",
            "missing",
            "!app",
        ];
        for s in no {
            assert!(!LabelSelector::parse(s).unwrap().matches(Some(&l)), "{s}");
        }
        assert!(LabelSelector::parse("a in b").is_err());
        assert!(LabelSelector::parse("a foo (b)").is_err());
    }

    #[test]
    fn structured_selectors_match_labels_and_expressions() {
        let sel = LabelSelector::from_json(Some(&json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["front"]}]
        })));
        assert!(sel.matches(Some(&labels(json!({"app": "web", "tier": "front"})))));
        assert!(!sel.matches(Some(&labels(json!({"app": "web"})))));
        assert_eq!(sel.to_string_form(), "app=web,tier in (front)");
        assert!(!LabelSelector::from_json(None).matches(None));
        assert!(LabelSelector::from_json(Some(&json!({}))).matches(None));
    }

    #[test]
    fn field_selectors_read_dotted_paths() {
        let pod = json!({"metadata": {"name": "p", "namespace": "ns"}, "spec": {"nodeName": "node-1"}, "status": {"phase": "Running"}});
        assert!(FieldSelector::parse("spec.nodeName=node-1")
            .unwrap()
            .matches(&pod));
        assert!(!FieldSelector::parse("spec.nodeName=node-2")
            .unwrap()
            .matches(&pod));
        assert!(FieldSelector::parse("status.phase!=Failed,metadata.name=p")
            .unwrap()
            .matches(&pod));
        let node = json!({"metadata": {"name": "n"}, "spec": {}});
        assert!(FieldSelector::parse("spec.unschedulable=false")
            .unwrap()
            .matches(&node));
        assert_eq!(
            FieldSelector::parse("metadata.name=x")
                .unwrap()
                .equality("metadata.name"),
            Some("x")
        );
        assert!(FieldSelector::parse("nonsense").is_err());
    }
}
