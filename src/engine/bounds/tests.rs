//! The bounds, one test per kind of refusal, and the property that nothing a caller sends
//! makes the checks panic or quote it back.

use rand::{rngs::StdRng, Rng, SeedableRng};
use serde_json::json;

use super::*;
use crate::domain::RequestedTarget;

/// A request well within every bound: a scale of production/web with an alert.
fn mk_request() -> ExecutionRequest {
    ExecutionRequest {
        action: "scale_deployment".into(),
        target: RequestedTarget {
            namespace: "production".into(),
            kind: "Deployment".into(),
            name: "web".into(),
            ..Default::default()
        },
        parameters: json!({"replicas": 5}).as_object().unwrap().clone(),
        request_id: "incident-42".into(),
        alert: Some(mk_alert(&[("app", "web")], &[("summary", "p99 over 2s")])),
        requester: "alice".into(),
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
        ..Default::default()
    }
}

fn mk_alert(labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> AlertContext {
    let map = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    AlertContext {
        name: "HighLatency".into(),
        severity: "critical".into(),
        labels: map(labels),
        annotations: map(annotations),
    }
}

fn mk_map(n: usize, value: &str) -> BTreeMap<String, String> {
    (0..n)
        .map(|i| (format!("k{i:03}"), value.to_string()))
        .collect()
}

fn alert_mut(request: &mut ExecutionRequest) -> &mut AlertContext {
    request.alert.as_mut().unwrap()
}

/// The refusal as `(field, message)`.
fn refusal(request: &ExecutionRequest) -> (String, String) {
    match check_request(request) {
        Err(EngineError::InvalidArgument { field, message }) => (field, message),
        other => panic!("expected an invalid argument, got {other:?}"),
    }
}

fn bytes(n: usize) -> String {
    "x".repeat(n)
}

#[test]
fn a_request_within_every_bound_passes() {
    check_request(&mk_request()).unwrap();
    check_request(&ExecutionRequest::default()).unwrap();
}

#[test]
fn a_label_value_over_the_limit_is_refused_naming_it() {
    let mut request = mk_request();
    alert_mut(&mut request)
        .labels
        .insert("app".into(), bytes(MAX_LABEL_VALUE_BYTES + 1));
    assert_eq!(
        refusal(&request),
        (
            r#"alert.labels["app"]"#.into(),
            "must be at most 4096 bytes (got 4097)".into()
        )
    );
}

#[test]
fn every_bound_is_inclusive() {
    let mut request = mk_request();
    request.request_id = bytes(MAX_REQUEST_ID_BYTES);
    request.target.name = bytes(MAX_NAME_BYTES);
    request.target.namespace = bytes(MAX_NAMESPACE_BYTES);
    request
        .parameters
        .insert("message".into(), json!(bytes(MAX_STRING_PARAMETER_BYTES)));
    let alert = alert_mut(&mut request);
    alert.labels = mk_map(MAX_ALERT_LABELS - 2, "v");
    alert
        .labels
        .insert("app".into(), bytes(MAX_LABEL_VALUE_BYTES));
    alert.labels.insert(bytes(MAX_ALERT_KEY_BYTES), "v".into());
    alert.annotations = mk_map(MAX_ALERT_ANNOTATIONS, "");
    check_request(&request).unwrap();
    check_reason("reason", &bytes(MAX_REASON_BYTES)).unwrap();
    check_approver(&bytes(MAX_IDENTITY_BYTES)).unwrap();
    check_execution_id(&bytes(MAX_EXECUTION_ID_BYTES)).unwrap();
}

#[test]
fn each_target_field_and_identity_over_its_limit_is_refused_naming_it() {
    type Setter = fn(&mut ExecutionRequest, String);
    let cases: [(&str, usize, Setter); 8] = [
        ("action", MAX_ACTION_BYTES, |r, v| r.action = v),
        ("target.cluster", MAX_CLUSTER_BYTES, |r, v| {
            r.target.cluster = v
        }),
        ("target.namespace", MAX_NAMESPACE_BYTES, |r, v| {
            r.target.namespace = v
        }),
        ("target.kind", MAX_KIND_BYTES, |r, v| r.target.kind = v),
        ("target.name", MAX_NAME_BYTES, |r, v| r.target.name = v),
        ("request_id", MAX_REQUEST_ID_BYTES, |r, v| r.request_id = v),
        ("requester", MAX_IDENTITY_BYTES, |r, v| r.requester = v),
        ("trace_id", MAX_TRACE_ID_BYTES, |r, v| r.trace_id = v),
    ];
    for (field, max, set) in cases {
        let mut request = mk_request();
        set(&mut request, bytes(max + 10));
        assert_eq!(
            refusal(&request),
            (
                field.to_string(),
                format!("must be at most {max} bytes (got {})", max + 10)
            )
        );
    }
}

#[test]
fn a_request_id_with_a_newline_or_non_ascii_is_refused() {
    let mut request = mk_request();
    request.request_id = "incident\n42".into();
    let (field, message) = refusal(&request);
    assert_eq!(field, "request_id");
    assert_eq!(message, "must be printable ASCII (byte 0x0a at offset 8)");
    request.request_id = "incidént-42".into();
    assert_eq!(refusal(&request).0, "request_id");
    request.request_id = "INC 42/retry-1".into();
    check_request(&request).unwrap();
}

#[test]
fn identities_with_control_characters_are_refused() {
    let mut request = mk_request();
    request.requester = "alice\u{1b}[31m".into();
    assert_eq!(refusal(&request).0, "requester");
    let err = check_approver("bob\r\nINFO approved").unwrap_err();
    assert_eq!(err.field(), Some("approver"));
    check_approver("Zoë Müller <zoe@example.com>").unwrap();
}

#[test]
fn a_label_key_over_the_limit_is_refused_without_quoting_all_of_it() {
    let mut request = mk_request();
    let key = "é".repeat(MAX_ALERT_KEY_BYTES);
    alert_mut(&mut request).labels.insert(key, "v".into());
    let (field, message) = refusal(&request);
    assert_eq!(field, format!("alert.labels[\"{}…\"]", "é".repeat(16)));
    assert_eq!(message, "the key must be at most 317 bytes (got 634)");
}

#[test]
fn too_many_labels_or_annotations_are_refused_by_count() {
    let mut request = mk_request();
    alert_mut(&mut request).labels = mk_map(MAX_ALERT_LABELS + 1, "v");
    assert_eq!(
        refusal(&request),
        (
            "alert.labels".into(),
            "must have at most 64 entries (got 65)".into()
        )
    );
    let mut request = mk_request();
    alert_mut(&mut request).annotations = mk_map(MAX_ALERT_ANNOTATIONS + 1, "");
    assert_eq!(
        refusal(&request),
        (
            "alert.annotations".into(),
            "must have at most 64 entries (got 65)".into()
        )
    );
}

#[test]
fn annotations_over_their_total_are_refused_though_each_is_small() {
    let mut request = mk_request();
    alert_mut(&mut request).annotations = mk_map(MAX_ALERT_ANNOTATIONS, &bytes(1100));
    let (field, message) = refusal(&request);
    assert_eq!(field, "alert.annotations");
    assert_eq!(message, "must be at most 65536 bytes in all (got 70656)");
}

#[test]
fn the_alert_name_and_severity_are_bounded() {
    let mut request = mk_request();
    alert_mut(&mut request).severity = bytes(MAX_ALERT_TEXT_BYTES + 1);
    assert_eq!(refusal(&request).0, "alert.severity");
    alert_mut(&mut request).name = bytes(MAX_ALERT_TEXT_BYTES + 1);
    assert_eq!(refusal(&request).0, "alert.name");
}

#[test]
fn a_long_string_parameter_is_refused_naming_the_parameter() {
    let mut request = mk_request();
    request.parameters.insert(
        "reason".into(),
        json!(bytes(MAX_STRING_PARAMETER_BYTES + 1)),
    );
    assert_eq!(
        refusal(&request),
        (
            "parameters.reason".into(),
            "must be at most 4096 bytes (got 4097)".into()
        )
    );
}

#[test]
fn too_many_long_named_or_bulky_parameters_are_refused() {
    let mut request = mk_request();
    request.parameters = (0..=MAX_PARAMETERS)
        .map(|i| (format!("p{i}"), json!(i)))
        .collect();
    assert_eq!(refusal(&request).1, "must have at most 64 entries (got 65)");

    let mut request = mk_request();
    request.parameters.insert(bytes(100), json!(1));
    let (field, message) = refusal(&request);
    assert_eq!(field, format!("parameters.{}…", bytes(32)));
    assert_eq!(message, "the name must be at most 63 bytes (got 100)");

    let mut request = mk_request();
    let list: Vec<String> = (0..500).map(|_| bytes(1000)).collect();
    request.parameters.insert("replicas".into(), json!(list));
    let (field, message) = refusal(&request);
    assert_eq!(field, "parameters");
    assert!(
        message.starts_with("must be at most 393216 bytes as JSON (got 50"),
        "{message}"
    );
}

#[test]
fn the_size_as_json_is_the_compact_encodings() {
    let value = json!({"a": [1, "xy", null, true, false, -2.5, {"b": {}}], "c": []});
    let parameters = value.as_object().unwrap();
    assert_eq!(
        object_json_bytes(parameters),
        serde_json::to_string(&value).unwrap().len()
    );
}

#[test]
fn a_request_within_every_field_bound_but_over_the_total_is_refused() {
    let mut request = mk_request();
    // 64 labels of 4 KiB each are each allowed, and so are 300 KB of parameters; together
    // they are 512 KiB and more.
    alert_mut(&mut request).labels = mk_map(MAX_ALERT_LABELS, &bytes(MAX_LABEL_VALUE_BYTES));
    let list: Vec<String> = (0..300).map(|_| bytes(1000)).collect();
    request.parameters.insert("replicas".into(), json!(list));
    let (field, message) = refusal(&request);
    assert_eq!(field, "request");
    assert!(
        message.starts_with("must be at most 524288 bytes in all (got 5"),
        "{message}"
    );
}

#[test]
fn reasons_approvers_and_execution_ids_over_their_limits_are_refused_naming_the_field() {
    let err = check_reason("reason", &bytes(MAX_REASON_BYTES + 1)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "reason: must be at most 1024 bytes (got 1025)"
    );
    let err = check_approver(&bytes(MAX_IDENTITY_BYTES + 1)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "approver: must be at most 256 bytes (got 257)"
    );
    let err = check_execution_id(&bytes(1 << 20)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "execution_id: must be at most 64 bytes (got 1048576)"
    );
}

#[test]
fn deeply_nested_parameters_are_sized_without_recursion() {
    let mut nested = json!("leaf");
    for _ in 0..250_000 {
        nested = Value::Array(vec![nested]);
    }
    let mut request = mk_request();
    request.parameters.insert("replicas".into(), nested);
    // A recursive walk would need megabytes of stack for this depth; 256 KiB must do.
    let result = std::thread::scope(|scope| {
        std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn_scoped(scope, || check_request(&request).map_err(|e| e.to_string()))
            .unwrap()
            .join()
            .unwrap()
    });
    assert!(result
        .unwrap_err()
        .starts_with("parameters: must be at most"));
    // serde_json drops recursively: take the tower apart one floor at a time.
    let mut floor = request.parameters.remove("replicas").unwrap();
    while let Value::Array(mut items) = floor {
        floor = items.pop().unwrap_or(Value::Null);
    }
}

/// A string of about `len` bytes: a random run of ASCII, quotes, control and multi-byte
/// characters, repeated (cheap enough for hundreds of kilobytes per string).
fn mk_random_string(rng: &mut StdRng, len: usize) -> String {
    const ALPHABET: &[char] = &[
        'a', 'Z', '7', '-', '/', '"', '\\', '\n', '\0', 'é', '€', '😀',
    ];
    let run: String = (0..rng.random_range(1..16))
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())])
        .collect();
    let mut s = run.repeat(len / run.len());
    s.extend(run.chars().take_while(|_| rng.random_bool(0.5)));
    s
}

#[test]
fn random_and_huge_inputs_never_panic_and_refusals_never_quote_them() {
    const EDGES: &[usize] = &[0, 1, 63, 64, 128, 129, 253, 317, 1024, 4096, 4097, 70_000];
    let mut rng = StdRng::seed_from_u64(13);
    let random = |rng: &mut StdRng| {
        let len = if rng.random_bool(0.97) {
            EDGES[rng.random_range(0..EDGES.len())] + rng.random_range(0..3)
        } else {
            rng.random_range(0..300_000)
        };
        mk_random_string(rng, len)
    };
    let map = |rng: &mut StdRng| {
        (0..rng.random_range(0..70))
            .map(|_| (random(rng), random(rng)))
            .collect::<BTreeMap<_, _>>()
    };
    for _ in 0..200 {
        let request = ExecutionRequest {
            action: random(&mut rng),
            target: RequestedTarget {
                cluster: random(&mut rng),
                namespace: random(&mut rng),
                kind: random(&mut rng),
                name: random(&mut rng),
            },
            parameters: map(&mut rng)
                .into_iter()
                .map(|(k, v)| (k, json!(v)))
                .collect(),
            request_id: random(&mut rng),
            alert: rng.random_bool(0.8).then(|| AlertContext {
                name: random(&mut rng),
                severity: random(&mut rng),
                labels: map(&mut rng),
                annotations: map(&mut rng),
            }),
            requester: random(&mut rng),
            trace_id: random(&mut rng),
            ..Default::default()
        };
        let answers = [
            check_request(&request),
            check_reason("reason", &request.action),
            check_approver(&request.requester),
            check_execution_id(&request.target.name),
        ];
        for answer in answers {
            match answer {
                Ok(()) => {}
                Err(err @ EngineError::InvalidArgument { .. }) => {
                    let text = err.to_string();
                    assert!(text.len() < 1024, "a refusal quoted its input: {text:.200}");
                }
                Err(other) => panic!("not an invalid argument: {other}"),
            }
        }
    }
}
