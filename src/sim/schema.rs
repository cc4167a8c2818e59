//! The part of a CustomResourceDefinition's `openAPIV3Schema` the simulated server enforces:
//! pruning of unknown fields (unless `x-kubernetes-preserve-unknown-fields: true`) and
//! structural checks — `type` (object, array, string, integer, number, boolean, with
//! `nullable` and `x-kubernetes-int-or-string`), `properties`, `additionalProperties`,
//! `items`, `required` and `enum` — with the API server's messages. Formats, patterns,
//! bounds and CEL rules are not checked.

use serde_json::{Map, Value};

/// `(field path, message)` pairs, as [`super::errors::ApiError::invalid`] takes them.
pub type Causes = Vec<(String, String)>;

/// Root fields every object keeps whatever its schema says.
const ROOT_KEPT: &[&str] = &["apiVersion", "kind", "metadata"];

fn preserves(schema: &Value) -> bool {
    schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true))
}

/// Removes the fields `schema` does not declare from `obj` (a whole custom object).
pub fn prune_root(schema: &Value, obj: &mut Value) {
    let Some(map) = obj.as_object_mut() else {
        return;
    };
    let props = schema.get("properties").and_then(Value::as_object);
    if !preserves(schema) {
        map.retain(|k, _| {
            ROOT_KEPT.contains(&k.as_str()) || props.is_some_and(|p| p.contains_key(k))
        });
    }
    if let Some(props) = props {
        for (k, v) in map.iter_mut() {
            if ROOT_KEPT.contains(&k.as_str()) {
                continue;
            }
            if let Some(s) = props.get(k) {
                prune(s, v);
            }
        }
    }
}

fn prune(schema: &Value, v: &mut Value) {
    match v {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            if let Some(add) = additional.filter(|a| a.is_object()) {
                for (k, val) in map.iter_mut() {
                    match props.and_then(|p| p.get(k)) {
                        Some(s) => prune(s, val),
                        None => prune(add, val),
                    }
                }
                return;
            }
            let keep_all = preserves(schema) || additional == Some(&Value::Bool(true));
            if !keep_all {
                map.retain(|k, _| props.is_some_and(|p| p.contains_key(k)));
            }
            if let Some(props) = props {
                for (k, val) in map.iter_mut() {
                    if let Some(s) = props.get(k) {
                        prune(s, val);
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for it in items {
                    prune(s, it);
                }
            }
        }
        _ => {}
    }
}

/// The schema type name of a JSON value, as the API server prints it in type errors.
fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if is_integer(n) => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn is_integer(n: &serde_json::Number) -> bool {
    n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
}

fn type_ok(ty: &str, v: &Value) -> bool {
    match (ty, v) {
        ("object", Value::Object(_)) | ("array", Value::Array(_)) => true,
        ("string", Value::String(_)) | ("boolean", Value::Bool(_)) => true,
        ("number", Value::Number(_)) => true,
        ("integer", Value::Number(n)) => is_integer(n),
        _ => false,
    }
}

/// A value as the API server quotes it in a field error: strings quoted, the rest as JSON.
pub fn quote(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

/// Checks a whole custom object against its version's root schema.
pub fn validate_root(schema: &Value, obj: &Value) -> Causes {
    let mut causes = Causes::new();
    let empty = Map::new();
    let map = obj.as_object().unwrap_or(&empty);
    let props = schema.get("properties").and_then(Value::as_object);
    for req in schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if !map.contains_key(req) {
            causes.push((req.to_string(), "Required value".into()));
        }
    }
    for (k, v) in map {
        if ROOT_KEPT.contains(&k.as_str()) {
            continue;
        }
        if let Some(s) = props.and_then(|p| p.get(k)) {
            check(s, v, k, &mut causes);
        }
    }
    causes
}

fn check(schema: &Value, v: &Value, path: &str, causes: &mut Causes) {
    if v.is_null() {
        if schema.get("nullable") != Some(&Value::Bool(true)) && schema.get("type").is_some() {
            let ty = schema.get("type").and_then(Value::as_str).unwrap_or("");
            causes.push((
                path.to_string(),
                format!("Invalid value: \"null\": {path} in body must be of type {ty}: \"null\""),
            ));
        }
        return;
    }
    let int_or_string = schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    if int_or_string {
        if !(v.is_string() || v.as_f64().is_some_and(|f| f.fract() == 0.0)) {
            let got = type_name(v);
            causes.push((
                path.to_string(),
                format!("Invalid value: \"{got}\": {path} in body must be of type integer,string: \"{got}\""),
            ));
            return;
        }
    } else if let Some(ty) = schema.get("type").and_then(Value::as_str) {
        if !type_ok(ty, v) {
            let got = type_name(v);
            causes.push((
                path.to_string(),
                format!("Invalid value: \"{got}\": {path} in body must be of type {ty}: \"{got}\""),
            ));
            return;
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.contains(v) {
            let list: Vec<String> = allowed.iter().map(quote).collect();
            causes.push((
                path.to_string(),
                format!(
                    "Unsupported value: {}: supported values: {}",
                    quote(v),
                    list.join(", ")
                ),
            ));
        }
    }
    match v {
        Value::Object(map) => {
            for req in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if !map.contains_key(req) {
                    causes.push((format!("{path}.{req}"), "Required value".into()));
                }
            }
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            for (k, val) in map {
                let sub = format!("{path}.{k}");
                match (props.and_then(|p| p.get(k)), additional) {
                    (Some(s), _) | (None, Some(s)) => check(s, val, &sub, causes),
                    (None, None) => {}
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for (i, it) in items.iter().enumerate() {
                    check(s, it, &format!("{path}[{i}]"), causes);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "spec": {"type": "object", "required": ["size"], "properties": {
                "replicas": {"type": "integer"},
                "size": {"type": "string", "enum": ["small", "large"]},
                "tags": {"type": "array", "items": {"type": "string"}},
                "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
            }},
            "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}},
        }})
    }

    #[test]
    fn unknown_fields_are_pruned_except_where_preserved() {
        let mut o = json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "a"},
            "junk": 1, "spec": {"size": "small", "nope": 2, "extra": {"any": {"thing": 1}}}});
        prune_root(&schema(), &mut o);
        assert_eq!(
            o,
            json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "a"},
                "spec": {"size": "small", "extra": {"any": {"thing": 1}}}})
        );
    }

    #[test]
    fn wrong_types_missing_required_and_enum_violations_name_the_field() {
        let o = json!({"spec": {"replicas": "3", "tags": ["a", 1]}});
        let causes = validate_root(&schema(), &o);
        assert!(causes.contains(&(
            "spec.replicas".into(),
            "Invalid value: \"string\": spec.replicas in body must be of type integer: \"string\""
                .into()
        )));
        assert!(causes.contains(&("spec.size".into(), "Required value".into())));
        assert!(causes.iter().any(|(f, _)| f == "spec.tags[1]"));
        let o = json!({"spec": {"size": "huge"}});
        assert_eq!(
            validate_root(&schema(), &o),
            vec![(
                "spec.size".into(),
                "Unsupported value: \"huge\": supported values: \"small\", \"large\"".into()
            )]
        );
    }
}
