//! Size bounds on everything a caller sends, checked before anything else reads a request.
//!
//! An execution keeps its request's alert and parameters in its record, its first event, the
//! store and every watcher's copy, and a refusal may quote what it refuses; so each string,
//! map and parameter has a ceiling, and a request over one is refused with
//! [`EngineError::InvalidArgument`] naming the field (`alert.labels["app"]: must be at most 4096
//! bytes (got 5000)`). The transport limits (4 MiB per gRPC message, 2 MiB per HTTP body) stay
//! the outer fence; these are the inner one, the same behind every door.
//!
//! Only sizes are checked here, and the bytes allowed in keys and identities. What a valid
//! Kubernetes name is belongs to [`super::target`], what a valid parameter is to the action's
//! descriptor; both run after these checks, so their messages never quote a megabyte.
//!
//! Sizes are bytes of UTF-8, not characters: bytes are what is stored and sent.

use std::{collections::BTreeMap, fmt::Write as _};

use serde_json::{Map, Value};

use super::EngineError;
use crate::domain::{AlertContext, ExecutionRequest};

/// `action`: registry names are snake_case words (the longest is 26 bytes); a DNS label's 63
/// keeps every name usable as a metrics label and a Kubernetes label value.
pub(crate) const MAX_ACTION_BYTES: usize = 63;
/// `target.cluster`: a kubeconfig context name; free-form, in practice a DNS name (253) or a
/// cloud ARN (an EKS cluster's is about 100).
pub(crate) const MAX_CLUSTER_BYTES: usize = 253;
/// `target.namespace`: namespaces are RFC 1123 labels (the syntax is checked by `target`).
pub(crate) const MAX_NAMESPACE_BYTES: usize = 63;
/// `target.kind`: a kind or its plural or short name; a resource's plural is a DNS label.
pub(crate) const MAX_KIND_BYTES: usize = 63;
/// `target.name`: object names are RFC 1123 subdomains (the syntax is checked by `target`).
pub(crate) const MAX_NAME_BYTES: usize = 253;
/// `request_id`: an idempotency key, indexed in the store and quoted in conflicts; a UUID is
/// 36 bytes, an Alertmanager group key or a ticket reference fits with room to spare.
pub(crate) const MAX_REQUEST_ID_BYTES: usize = 128;
/// `requester`, `approver`: identities. An OpenID Connect subject is at most 255 ASCII
/// characters; certificate names and token names are shorter.
pub(crate) const MAX_IDENTITY_BYTES: usize = 256;
/// `trace_id`: a W3C trace id is 32 hex digits; twice that admits other tracers' ids.
pub(crate) const MAX_TRACE_ID_BYTES: usize = 64;
/// `alert.name`, `alert.severity`: an alert rule's name and a severity word.
pub(crate) const MAX_ALERT_TEXT_BYTES: usize = 256;
/// Entries of `alert.labels`: an Alertmanager alert carries a dozen or two; the target is
/// taken from a few of them.
pub(crate) const MAX_ALERT_LABELS: usize = 64;
/// Keys of `alert.labels` and `alert.annotations`: a Kubernetes qualified key, a 253-byte DNS
/// prefix, `/` and a 63-byte name (Prometheus label names are shorter still).
pub(crate) const MAX_ALERT_KEY_BYTES: usize = 317;
/// Values of `alert.labels`: Kubernetes caps label values at 63 bytes but Prometheus does not,
/// and alert labels carry URLs and image references; free text belongs in annotations.
pub(crate) const MAX_LABEL_VALUE_BYTES: usize = 4096;
/// Entries of `alert.annotations`: summary, description, runbook links and the like.
pub(crate) const MAX_ALERT_ANNOTATIONS: usize = 64;
/// Keys and values of `alert.annotations` together: room for a long description; a
/// Kubernetes object's annotations may take 256 KiB in all, one alert's a quarter of that.
pub(crate) const MAX_ANNOTATIONS_BYTES: usize = 64 * 1024;
/// Entries of `parameters`: no action takes more than a handful; unknown names are refused
/// later, and this bounds the work of refusing them.
pub(crate) const MAX_PARAMETERS: usize = 64;
/// A parameter's name: names are snake_case words (the longest is about 20 bytes).
pub(crate) const MAX_PARAMETER_NAME_BYTES: usize = 63;
/// A string parameter: the longest any action takes is `notify_only`'s message; container
/// names, taint keys and values and quantities are 63 bytes or less.
pub(crate) const MAX_STRING_PARAMETER_BYTES: usize = 4096;
/// `parameters` as compact JSON: bounds lists and objects before the action's types refuse
/// them, with room for one code bundle (`deploy_code`'s `files`, at most 256 KiB of paths and
/// contents, escaped as JSON).
pub(crate) const MAX_PARAMETERS_BYTES: usize = 384 * 1024;
/// `reason` of a cancellation, an approval or a rejection: a sentence or two and a ticket
/// link, recorded in the execution's events.
pub(crate) const MAX_REASON_BYTES: usize = 1024;
/// A recommendation's `reasoning`: a few paragraphs of a decision engine's explanation.
pub(crate) const MAX_REASONING_BYTES: usize = 16 * 1024;
/// `execution_id`: ids are UUIDs (36 bytes); anything much longer names no execution.
pub(crate) const MAX_EXECUTION_ID_BYTES: usize = 64;
/// The whole request (every string's bytes plus the parameters' compact JSON): each field may
/// use its room, not all of them at once; the sum of the field bounds is about 740 KiB.
pub(crate) const MAX_REQUEST_BYTES: usize = 512 * 1024;

/// Checks every caller-supplied field of `request` against its bound, in a fixed order.
///
/// # Errors
/// [`EngineError::InvalidArgument`] for the first field over its bound, named as the API
/// names it (`request_id`, `target.name`, `parameters.message`, `alert.labels["app"]`), with
/// `must be at most N bytes (got M)` or `must have at most N entries (got M)`; `request` when
/// only the whole is too large. The message never quotes the value.
pub(crate) fn check_request(request: &ExecutionRequest) -> Result<(), EngineError> {
    let target = &request.target;
    let strings = [
        ("action", &request.action, MAX_ACTION_BYTES),
        ("target.cluster", &target.cluster, MAX_CLUSTER_BYTES),
        ("target.namespace", &target.namespace, MAX_NAMESPACE_BYTES),
        ("target.kind", &target.kind, MAX_KIND_BYTES),
        ("target.name", &target.name, MAX_NAME_BYTES),
        ("request_id", &request.request_id, MAX_REQUEST_ID_BYTES),
        ("requester", &request.requester, MAX_IDENTITY_BYTES),
        ("trace_id", &request.trace_id, MAX_TRACE_ID_BYTES),
    ];
    for (field, value, max) in strings {
        at_most(field, value, max)?;
    }
    if request.priority.abs() > crate::domain::MAX_PRIORITY {
        return Err(EngineError::invalid(
            "priority",
            format!(
                "must be between -{max} and {max}, got {}",
                request.priority,
                max = crate::domain::MAX_PRIORITY
            ),
        ));
    }
    printable_ascii("request_id", &request.request_id)?;
    printable_ascii("trace_id", &request.trace_id)?;
    no_control_characters("requester", &request.requester)?;
    let parameters = check_parameters(&request.parameters)?;
    let alert = match &request.alert {
        Some(alert) => check_alert(alert)?,
        None => 0,
    };
    let recommendation = match &request.recommendation {
        Some(r) => check_recommendation(r)?,
        None => 0,
    };
    let total = strings.iter().map(|(_, value, _)| value.len()).fold(
        parameters
            .saturating_add(alert)
            .saturating_add(recommendation),
        usize::saturating_add,
    );
    if total > MAX_REQUEST_BYTES {
        return Err(EngineError::invalid(
            "request",
            format!("must be at most {MAX_REQUEST_BYTES} bytes in all (got {total})"),
        ));
    }
    Ok(())
}

/// Checks a recommendation's fields; returns its size in bytes.
fn check_recommendation(r: &crate::domain::Recommendation) -> Result<usize, EngineError> {
    at_most(
        "recommendation.incident_id",
        &r.incident_id,
        MAX_REQUEST_ID_BYTES,
    )?;
    at_most("recommendation.source", &r.source, MAX_IDENTITY_BYTES)?;
    at_most(
        "recommendation.reasoning",
        &r.reasoning,
        MAX_REASONING_BYTES,
    )?;
    no_control_characters("recommendation.incident_id", &r.incident_id)?;
    if let Some(confidence) = r.confidence {
        if !(0.0..=1.0).contains(&confidence) {
            return Err(EngineError::invalid(
                "recommendation.confidence",
                format!("must be between 0 and 1, got {confidence}"),
            ));
        }
    }
    Ok(r.incident_id.len() + r.source.len() + r.reasoning.len())
}

/// Checks the `reason` of a cancellation, an approval or a rejection; `field` is how the
/// caller's API names it (`reason`).
///
/// # Errors
/// [`EngineError::InvalidArgument`] naming `field` when it is over [`MAX_REASON_BYTES`].
pub(crate) fn check_reason(field: &str, reason: &str) -> Result<(), EngineError> {
    at_most(field, reason, MAX_REASON_BYTES)
}

/// Checks the `approver` of an approval or a rejection: an identity, so bounded and free of
/// control characters (it is compared with the requester and written to logs).
///
/// # Errors
/// [`EngineError::InvalidArgument`] naming `approver`.
pub(crate) fn check_approver(approver: &str) -> Result<(), EngineError> {
    at_most("approver", approver, MAX_IDENTITY_BYTES)?;
    no_control_characters("approver", approver)
}

/// Checks an `execution_id` a caller names (cancel, approve, reject, get, watch).
///
/// # Errors
/// [`EngineError::InvalidArgument`] naming `execution_id` when it is over
/// [`MAX_EXECUTION_ID_BYTES`]; an id that could exist is left to the lookup.
pub(crate) fn check_execution_id(id: &str) -> Result<(), EngineError> {
    at_most("execution_id", id, MAX_EXECUTION_ID_BYTES)
}

/// `parameters`: entries, names, string values, then the whole; returns its size as JSON.
fn check_parameters(parameters: &Map<String, Value>) -> Result<usize, EngineError> {
    entries("parameters", parameters.len(), MAX_PARAMETERS)?;
    for (name, value) in parameters {
        if name.len() > MAX_PARAMETER_NAME_BYTES {
            return Err(EngineError::invalid(
                &format!("parameters.{}", prefix(name)),
                format!(
                    "the name must be at most {MAX_PARAMETER_NAME_BYTES} bytes (got {})",
                    name.len()
                ),
            ));
        }
        if let Value::String(s) = value {
            at_most(&format!("parameters.{name}"), s, MAX_STRING_PARAMETER_BYTES)?;
        }
    }
    let size = object_json_bytes(parameters);
    if size > MAX_PARAMETERS_BYTES {
        return Err(EngineError::invalid(
            "parameters",
            format!("must be at most {MAX_PARAMETERS_BYTES} bytes as JSON (got {size})"),
        ));
    }
    Ok(size)
}

/// `alert`: name, severity, labels, annotations; returns its size in bytes.
fn check_alert(alert: &AlertContext) -> Result<usize, EngineError> {
    at_most("alert.name", &alert.name, MAX_ALERT_TEXT_BYTES)?;
    at_most("alert.severity", &alert.severity, MAX_ALERT_TEXT_BYTES)?;
    entries("alert.labels", alert.labels.len(), MAX_ALERT_LABELS)?;
    let labels = check_map("alert.labels", &alert.labels, Some(MAX_LABEL_VALUE_BYTES))?;
    entries(
        "alert.annotations",
        alert.annotations.len(),
        MAX_ALERT_ANNOTATIONS,
    )?;
    let annotations = check_map("alert.annotations", &alert.annotations, None)?;
    if annotations > MAX_ANNOTATIONS_BYTES {
        return Err(EngineError::invalid(
            "alert.annotations",
            format!("must be at most {MAX_ANNOTATIONS_BYTES} bytes in all (got {annotations})"),
        ));
    }
    Ok(alert.name.len() + alert.severity.len() + labels + annotations)
}

/// Each key (and value, when `max_value` is given) of a string map; returns keys' and values'
/// bytes together.
fn check_map(
    field: &str,
    map: &BTreeMap<String, String>,
    max_value: Option<usize>,
) -> Result<usize, EngineError> {
    let mut size = 0usize;
    for (key, value) in map {
        if key.len() > MAX_ALERT_KEY_BYTES {
            return Err(EngineError::invalid(
                &format!("{field}[{:?}]", prefix(key)),
                format!(
                    "the key must be at most {MAX_ALERT_KEY_BYTES} bytes (got {})",
                    key.len()
                ),
            ));
        }
        if let Some(max) = max_value {
            at_most(&format!("{field}[{key:?}]"), value, max)?;
        }
        size = size.saturating_add(key.len()).saturating_add(value.len());
    }
    Ok(size)
}

fn at_most(field: &str, value: &str, max: usize) -> Result<(), EngineError> {
    if value.len() > max {
        return Err(EngineError::invalid(
            field,
            format!("must be at most {max} bytes (got {})", value.len()),
        ));
    }
    Ok(())
}

fn entries(field: &str, count: usize, max: usize) -> Result<(), EngineError> {
    if count > max {
        return Err(EngineError::invalid(
            field,
            format!("must have at most {max} entries (got {count})"),
        ));
    }
    Ok(())
}

/// Keys and trace ids travel in logs, headers and error messages: printable ASCII needs no
/// escaping anywhere, and two keys that look alike are alike.
fn printable_ascii(field: &str, value: &str) -> Result<(), EngineError> {
    match value.bytes().position(|b| !(b' '..=b'~').contains(&b)) {
        None => Ok(()),
        Some(at) => Err(EngineError::invalid(
            field,
            format!(
                "must be printable ASCII (byte {:#04x} at offset {at})",
                value.as_bytes()[at]
            ),
        )),
    }
}

fn no_control_characters(field: &str, value: &str) -> Result<(), EngineError> {
    match value.char_indices().find(|(_, c)| c.is_control()) {
        None => Ok(()),
        Some((at, c)) => Err(EngineError::invalid(
            field,
            format!("must not contain control characters ({c:?} at offset {at})"),
        )),
    }
}

/// The start of an over-long key, to name it in a field without quoting all of it.
fn prefix(key: &str) -> String {
    const SHOWN: usize = 32;
    let end = (0..=SHOWN.min(key.len()))
        .rev()
        .find(|&i| key.is_char_boundary(i))
        .unwrap_or(0);
    format!("{}…", &key[..end])
}

/// The size of `object` as compact JSON, escapes aside.
fn object_json_bytes(object: &Map<String, Value>) -> usize {
    let mut size = 2 + object.len().saturating_sub(1);
    for (key, value) in object {
        size = size
            .saturating_add(key.len() + 3)
            .saturating_add(json_bytes(value));
    }
    size
}

/// The size of `value` as compact JSON, escapes aside. Iterative: no nesting depth can
/// exhaust the stack, whatever a decoder let through.
fn json_bytes(value: &Value) -> usize {
    let mut size = 0usize;
    let mut pending = vec![value];
    while let Some(value) = pending.pop() {
        let own = match value {
            Value::Null | Value::Bool(true) => 4,
            Value::Bool(false) => 5,
            Value::Number(n) => {
                let mut counter = ByteCounter(0);
                let _ = write!(counter, "{n}");
                counter.0
            }
            Value::String(s) => s.len().saturating_add(2),
            Value::Array(items) => {
                pending.extend(items);
                2 + items.len().saturating_sub(1)
            }
            Value::Object(fields) => {
                pending.extend(fields.values());
                fields
                    .keys()
                    .fold(2 + fields.len().saturating_sub(1), |sum, key| {
                        sum.saturating_add(key.len() + 3)
                    })
            }
        };
        size = size.saturating_add(own);
    }
    size
}

/// Counts what is written, to size a number without allocating its text.
struct ByteCounter(usize);

impl std::fmt::Write for ByteCounter {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0 += s.len();
        Ok(())
    }
}

#[cfg(test)]
mod tests;
