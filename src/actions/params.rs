//! Typed parameter validation driven by each action's [`ParamSpec`]s: one validator for every
//! action, so `ListActions` and the checks can never disagree.

use serde_json::{Map, Value};

use super::ActionError;
use crate::domain::{ParamSpec, ParamType};

/// Checks `input` against `specs` and returns the parameters in canonical form (integers as
/// JSON integers, numeric strings accepted, defaults applied). `null` counts as absent.
///
/// # Errors
/// [`ActionError::InvalidParameter`] naming the first offending parameter (`parameters.NAME`):
/// unknown name, wrong type, out of bounds, or a required one missing.
pub fn validate_parameters(
    specs: &[ParamSpec],
    input: &Map<String, Value>,
) -> Result<Map<String, Value>, ActionError> {
    let mut unknown: Vec<&String> = input
        .keys()
        .filter(|k| !specs.iter().any(|s| s.name == k.as_str()))
        .collect();
    unknown.sort();
    if let Some(name) = unknown.first() {
        let known: Vec<&str> = specs.iter().map(|s| s.name).collect();
        let known = if known.is_empty() {
            "this action takes no parameters".to_string()
        } else {
            format!("known parameters: {}", known.join(", "))
        };
        return Err(ActionError::invalid(
            name,
            format!("unknown parameter ({known})"),
        ));
    }
    // What was given is checked before what is missing: a wrong value is the likelier mistake.
    let mut out = Map::new();
    for spec in specs {
        if let Some(value) = input.get(spec.name).filter(|v| !v.is_null()) {
            out.insert(spec.name.to_string(), canonical(spec, value)?);
        }
    }
    for spec in specs {
        if out.contains_key(spec.name) {
            continue;
        }
        if spec.required {
            return Err(ActionError::invalid(spec.name, "is required"));
        }
        if let Some(default) = &spec.default {
            out.insert(spec.name.to_string(), default.clone());
        }
    }
    Ok(out)
}

fn canonical(spec: &ParamSpec, value: &Value) -> Result<Value, ActionError> {
    let wrong = || {
        ActionError::invalid(
            spec.name,
            format!("must be {}, got {}", spec.ty.name(), describe(value)),
        )
    };
    match spec.ty {
        ParamType::Integer => {
            let n = match value {
                Value::Number(n) => n
                    .as_i64()
                    .or_else(|| {
                        n.as_f64()
                            .filter(|f| f.fract() == 0.0 && f.abs() < 9e15)
                            .map(|f| f as i64)
                    })
                    .ok_or_else(wrong)?,
                Value::String(s) => s.trim().parse::<i64>().map_err(|_| wrong())?,
                _ => return Err(wrong()),
            };
            if let (Some(min), Some(max)) = (spec.min, spec.max) {
                if n < min || n > max {
                    return Err(ActionError::invalid(
                        spec.name,
                        format!("must be between {min} and {max}, got {n}"),
                    ));
                }
            }
            Ok(Value::from(n))
        }
        ParamType::Boolean => match value {
            Value::Bool(b) => Ok(Value::Bool(*b)),
            Value::String(s) if s == "true" || s == "false" => Ok(Value::Bool(s == "true")),
            _ => Err(wrong()),
        },
        ParamType::String => match value {
            Value::String(s) if !spec.allowed.is_empty() && !spec.allowed.contains(&s.as_str()) => {
                Err(ActionError::invalid(
                    spec.name,
                    format!("must be one of {}, got {s:?}", spec.allowed.join(", ")),
                ))
            }
            Value::String(s) if !s.trim().is_empty() => Ok(Value::String(s.clone())),
            Value::String(_) => Err(ActionError::invalid(spec.name, "must not be empty")),
            _ => Err(wrong()),
        },
        ParamType::Quantity => {
            let text = match value {
                Value::String(s) => s.trim().to_string(),
                Value::Number(n) => n.to_string(),
                _ => return Err(wrong()),
            };
            if is_quantity(&text) {
                Ok(Value::String(text))
            } else {
                Err(wrong())
            }
        }
        ParamType::Files => {
            let files = value.as_object().ok_or_else(wrong)?;
            check_files(spec.name, files)?;
            Ok(value.clone())
        }
    }
}

/// Checks that `text`, given as parameter `field`, can name a Kubernetes object (an RFC 1123
/// subdomain): names go into request paths, where anything else is not a name at all.
///
/// # Errors
/// [`ActionError::InvalidParameter`] naming `field`.
pub(crate) fn check_object_name(field: &str, text: &str) -> Result<(), ActionError> {
    let label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if text.len() <= 253 && text.split('.').all(label) {
        Ok(())
    } else {
        let shown: String = text.chars().filter(|c| !c.is_control()).take(80).collect();
        Err(ActionError::invalid(
            field,
            format!("{shown:?} is not a Kubernetes object name (lower-case letters, digits, '-' and '.')"),
        ))
    }
}

/// Files in a bundle: enough for a service's source, few enough to list in an event.
pub const MAX_BUNDLE_FILES: usize = 100;
/// A bundle's paths and contents together, in bytes: it is kept in a ConfigMap (at most
/// 1 MiB in Kubernetes) and in the execution's record.
pub const MAX_BUNDLE_BYTES: usize = 256 * 1024;

/// A bundle: relative paths of `[A-Za-z0-9._-]` segments (no `.`, `..`, leading `/` or empty
/// segment), text contents, within [`MAX_BUNDLE_FILES`] and [`MAX_BUNDLE_BYTES`].
fn check_files(name: &str, files: &Map<String, Value>) -> Result<(), ActionError> {
    if files.is_empty() {
        return Err(ActionError::invalid(name, "must hold at least one file"));
    }
    if files.len() > MAX_BUNDLE_FILES {
        return Err(ActionError::invalid(
            name,
            format!(
                "holds {} files, at most {MAX_BUNDLE_FILES} are allowed",
                files.len()
            ),
        ));
    }
    let mut total = 0usize;
    for (path, content) in files {
        let segments_ok = path.len() <= 253
            && path.split('/').all(|segment| {
                !segment.is_empty()
                    && segment != "."
                    && segment != ".."
                    && segment
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            });
        if !segments_ok {
            let shown: String = path.chars().take(80).collect();
            return Err(ActionError::invalid(
                name,
                format!(
                    "{shown:?} is not a relative file path (segments of letters, digits, '.', '_' \
                     and '-', no '..', at most 253 bytes)"
                ),
            ));
        }
        let text = content.as_str().ok_or_else(|| {
            ActionError::invalid(
                name,
                format!(
                    "{path:?}: the content must be a string, got {}",
                    describe(content)
                ),
            )
        })?;
        total = total.saturating_add(path.len() + text.len());
    }
    if total > MAX_BUNDLE_BYTES {
        return Err(ActionError::invalid(
            name,
            format!("the bundle is {total} bytes, at most {MAX_BUNDLE_BYTES} are allowed (name a ConfigMap holding larger code instead)"),
        ));
    }
    Ok(())
}

fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) => format!("string {s:?}"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// The value of a Kubernetes quantity in base units (`500m` → 0.5, `1Gi` → 1073741824), for
/// comparisons; `None` when `text` is not a quantity.
pub fn parse_quantity(text: &str) -> Option<f64> {
    const MULTIPLIERS: &[(&str, f64)] = &[
        ("Ki", 1024.0),
        ("Mi", 1048576.0),
        ("Gi", 1073741824.0),
        ("Ti", 1099511627776.0),
        ("Pi", 1125899906842624.0),
        ("Ei", 1152921504606846976.0),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    let text = text.trim();
    if !is_quantity(text) {
        return None;
    }
    for (suffix, multiplier) in MULTIPLIERS {
        if let Some(number) = text.strip_suffix(suffix) {
            return number.parse::<f64>().ok().map(|n| n * multiplier);
        }
    }
    text.parse::<f64>().ok()
}

/// A Kubernetes quantity: a non-negative decimal number with an optional SI or binary suffix.
pub(crate) fn is_quantity(text: &str) -> bool {
    const SUFFIXES: &[&str] = &[
        "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "n", "u", "m", "k", "M", "G", "T", "P", "E", "",
    ];
    SUFFIXES.iter().any(|suffix| {
        text.strip_suffix(suffix).is_some_and(|number| {
            !number.is_empty()
                && number.chars().filter(|c| *c == '.').count() <= 1
                && number.chars().all(|c| c.is_ascii_digit() || c == '.')
                && number.chars().any(|c| c.is_ascii_digit())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn specs() -> Vec<ParamSpec> {
        vec![
            ParamSpec::new("replicas", ParamType::Integer, "").bounds(0, 100),
            ParamSpec::new("force", ParamType::Boolean, "").default(false),
            ParamSpec::new("size", ParamType::Quantity, ""),
        ]
    }

    fn check(input: Value) -> Result<Map<String, Value>, ActionError> {
        validate_parameters(&specs(), input.as_object().unwrap())
    }

    #[test]
    fn integers_arrive_as_json_numbers_or_numeric_strings() {
        assert_eq!(
            check(json!({"replicas": 5.0})).unwrap()["replicas"],
            json!(5)
        );
        assert_eq!(
            check(json!({"replicas": "7"})).unwrap()["replicas"],
            json!(7)
        );
    }

    #[test]
    fn an_ill_typed_parameter_is_named_in_the_error() {
        let err = check(json!({"replicas": "abc"})).unwrap_err().to_string();
        assert!(
            err.starts_with("parameters.replicas: must be an integer"),
            "{err}"
        );
        let err = check(json!({"replicas": 2.5})).unwrap_err().to_string();
        assert!(err.starts_with("parameters.replicas"), "{err}");
    }

    #[test]
    fn bounds_and_unknown_names_are_rejected() {
        let err = check(json!({"replicas": 101})).unwrap_err().to_string();
        assert_eq!(
            err,
            "parameters.replicas: must be between 0 and 100, got 101"
        );
        let err = check(json!({"replicaz": 1})).unwrap_err().to_string();
        assert!(
            err.starts_with("parameters.replicaz: unknown parameter"),
            "{err}"
        );
    }

    #[test]
    fn defaults_are_applied_and_null_counts_as_absent() {
        let out = check(json!({"replicas": null})).unwrap();
        assert_eq!(out.get("replicas"), None);
        assert_eq!(out["force"], json!(false));
    }

    #[test]
    fn a_bundle_is_relative_paths_to_text_within_bounds() {
        let spec = [ParamSpec::new("files", ParamType::Files, "")];
        let check = |v: Value| {
            validate_parameters(&spec, &json!({ "files": v }).as_object().unwrap().clone())
        };
        assert!(check(json!({"main.py": "print(1)", "pkg/util.py": ""})).is_ok());
        for bad in [
            json!({}),
            json!("main.py"),
            json!({"../etc/passwd": "x"}),
            json!({"/abs.py": "x"}),
            json!({"a//b.py": "x"}),
            json!({"main.py": 5}),
            json!({"big.py": "x".repeat(MAX_BUNDLE_BYTES)}),
        ] {
            let err = check(bad.clone()).unwrap_err().to_string();
            assert!(err.starts_with("parameters.files: "), "{bad}: {err}");
        }
    }

    #[test]
    fn quantities_follow_the_kubernetes_grammar() {
        for ok in ["500m", "1Gi", "2", "0.5", "10Ki"] {
            assert!(is_quantity(ok), "{ok}");
        }
        for bad in ["", "Gi", "1.2.3", "-1", "12xyz"] {
            assert!(!is_quantity(bad), "{bad}");
        }
        assert_eq!(parse_quantity("500m"), Some(0.5));
        assert_eq!(parse_quantity("1Gi"), Some(1073741824.0));
        assert!(parse_quantity("512Mi") < parse_quantity("1G"));
    }
}
