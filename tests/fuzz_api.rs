//! Reliability, bad input: thousands of random and mutated requests against the real binary's
//! gRPC and HTTP/JSON doors, on its embedded simulated cluster.
//!
//! Whatever comes in, the server stays up and every answer is an allowed outcome: success, or
//! a refusal with the right code. gRPC refuses malformed input with `INVALID_ARGUMENT` and a
//! message that starts with the field (`parameters.replicas: …`), and well-formed requests
//! about something missing or forbidden with `NOT_FOUND`, `FAILED_PRECONDITION`,
//! `PERMISSION_DENIED` or `RESOURCE_EXHAUSTED`; never `UNKNOWN`, `INTERNAL` or a broken
//! transport. HTTP answers JSON every time, a refusal as `{"error": {"code", "field",
//! "message"}}` with its code's status; never a 5xx.
//!
//! Every case is generated from its own seed, derived from the run's seed and the case's
//! number, so a failure names what to replay: `FUZZ_SEED=<seed> cargo test --test fuzz_api`.
//! `FUZZ_CASES` sets the number of cases per door.
//!
//! Not asserted: that a huge but well-formed value is refused. Size bounds are a policy of
//! their own; here a 1 MiB label may be accepted, as long as the answer is an allowed one.
//!
//! The bugs the fuzzing found (each fixed since) have a directed regression test; the random
//! cases steer clear of those inputs (the constants below say how), so that a regression shows
//! up in its own test rather than as noise here.

mod common;

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use common::ServeProcess;
use executor_service::{
    api::proto::{self, executor_service_client::ExecutorServiceClient, ActionDescriptor},
    engine::MAX_TIMEOUT,
};
use futures::StreamExt;
use prost_types::value::Kind;
use rand::{rngs::StdRng, seq::IndexedRandom, Rng, SeedableRng};
use serde_json::{json, Map, Value};
use tonic::{transport::Channel, Code, Status};

/// Cases per door unless `FUZZ_CASES` says otherwise: each door's test stays well under a
/// minute in a debug build on two cores.
const DEFAULT_CASES: usize = 2_000;

/// Requests in flight at once per door: concurrent enough to mix cases inside the server,
/// few enough that a slow dry run does not starve the others.
const IN_FLIGHT: usize = 8;

/// A huge string: far beyond any name or label a client means to send, yet within both doors'
/// message limits (gRPC 4 MiB, HTTP 2 MiB), so the request reaches the server's own checks.
/// (Bodies over HTTP's limit have a test of their own: refusing one closes the connection,
/// which would fail whichever random case shared it, see
/// [`http_a_body_over_the_limit_is_refused_and_the_connection_closed_openly`].)
const HUGE: usize = 1 << 20;

/// Share of the cases that carry a [`HUGE`] string: one costs as much as hundreds of small
/// cases (the refusal quotes it whole), so a few dozen per run.
const HUGE_SHARE: f64 = 0.02;

/// Nesting of the deeply nested JSON bodies: far beyond serde_json's recursion limit (128).
const DEEP: usize = 10_000;

/// Nesting of the parameter values sent over gRPC. prost refuses a message nested more than
/// 100 messages deep (a list in a list costs two, `Value` and `ListValue`; an object in an
/// object three, with the map entry: 32 of them fit), and tonic answers that INTERNAL: see
/// [`grpc_parameters_nested_beyond_the_decoder_limit_are_invalid_argument`]. The random cases
/// stay within it so that known bug does not mask others.
const GRPC_NESTING: usize = 30;

/// The fuzzing gRPC client's limit on a response's headers. A refusal echoes what it refuses,
/// and the server does not bound the echo: a status for a 1 MiB name is larger than the 16 KiB
/// a default tonic client takes, which then reports a transport error instead (see
/// [`grpc_refusals_of_huge_values_reach_a_default_client`]). The fuzzing client takes any
/// size, so that the code of every refusal is checked.
const GRPC_MAX_HEADER_LIST: u32 = 64 << 20;

/// Characters of an execution id kept in a URL path: a 1 MiB id would make a URI longer than
/// the HTTP parser takes, refused before any route of ours sees it.
const MAX_PATH_ID_CHARS: usize = 1000;

/// Longest one request may take before the server counts as hung.
const PATIENCE: Duration = Duration::from_secs(30);

/// Refusals a request may get: malformed (`INVALID_ARGUMENT`), or well-formed but about
/// something missing or forbidden. RESOURCE_EXHAUSTED is a rate limiter's or a full queue's.
const ANY_REFUSAL: &[Code] = &[
    Code::InvalidArgument,
    Code::NotFound,
    Code::FailedPrecondition,
    Code::PermissionDenied,
    Code::ResourceExhausted,
];

/// Refusals of a request that cannot be valid. RESOURCE_EXHAUSTED: a rate limiter may answer
/// before the request is read.
const MALFORMED: &[Code] = &[Code::InvalidArgument, Code::ResourceExhausted];

/// What an `INVALID_ARGUMENT` may name, up to the first `.`: the fields of both doors'
/// requests, and `body` and `query` for what HTTP could not decode.
const FIELDS: &[&str] = &[
    "action",
    "target",
    "parameters",
    "alert",
    "request_id",
    "timeout",
    "timeout_seconds",
    "wait",
    "rollback_on_failure",
    "execution_id",
    "from_sequence",
    "state",
    "namespace",
    "requester",
    "page_size",
    "page_token",
    "Last-Event-ID",
    "approver",
    "reason",
    "body",
    "query",
];

// ---- the run: seed, server, clients ---------------------------------------------------------

/// The run's seed and size, from `FUZZ_SEED` and `FUZZ_CASES`.
#[derive(Clone, Copy)]
struct Run {
    seed: u64,
    cases: usize,
}

impl Run {
    fn from_env(door: &str) -> Run {
        let seed = match std::env::var("FUZZ_SEED") {
            Ok(text) => {
                let text = text.trim();
                match text.strip_prefix("0x") {
                    Some(hex) => u64::from_str_radix(hex, 16),
                    None => text.parse(),
                }
                .unwrap_or_else(|_| panic!("FUZZ_SEED={text:?} is not a number"))
            }
            Err(_) => rand::rng().random(),
        };
        let cases = std::env::var("FUZZ_CASES")
            .ok()
            .map(|n| n.trim().parse().expect("FUZZ_CASES is not a number"))
            .unwrap_or(DEFAULT_CASES);
        eprintln!("{door}: FUZZ_SEED={seed} FUZZ_CASES={cases}");
        Run { seed, cases }
    }

    /// The generator of case `case`: every case its own stream, so that it replays alone and
    /// whatever ran concurrently does not change it.
    fn rng(&self, case: usize) -> StdRng {
        StdRng::seed_from_u64(self.seed ^ (case as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }
}

/// The real binary's `serve` with no rate limit: thousands of requests from one identity are
/// the point here.
fn start_server() -> ServeProcess {
    ServeProcess::start(&["--rate-limit", "0"])
}

/// A gRPC client of `server`, as generated clients are by default, or taking statuses of any
/// size ([`GRPC_MAX_HEADER_LIST`]).
async fn grpc_client_with(server: &ServeProcess, any_size: bool) -> ExecutorServiceClient<Channel> {
    let mut endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
        .expect("an endpoint");
    if any_size {
        endpoint = endpoint.http2_max_header_list_size(GRPC_MAX_HEADER_LIST);
    }
    for _ in 0..50 {
        if let Ok(channel) = endpoint.connect().await {
            return ExecutorServiceClient::new(channel);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("gRPC server at {} did not come up", server.addr);
}

async fn grpc_client(server: &ServeProcess) -> ExecutorServiceClient<Channel> {
    grpc_client_with(server, true).await
}

/// A plain-HTTP client; reqwest is built without a default TLS crypto provider, so one is
/// installed first.
fn http_client() -> reqwest::Client {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(PATIENCE)
        .build()
        .expect("HTTP client")
}

/// The action catalog, which the generators draw plausible requests from.
async fn catalog(client: &mut ExecutorServiceClient<Channel>) -> Vec<ActionDescriptor> {
    let actions = client
        .list_actions(proto::ListActionsRequest {})
        .await
        .expect("ListActions")
        .into_inner()
        .actions;
    assert!(!actions.is_empty(), "the catalog is empty");
    actions
}

/// The server process is alive and serves: `/health`, `ListActions`, and a valid dry run.
async fn assert_still_serving(
    server: &mut ServeProcess,
    client: &mut ExecutorServiceClient<Channel>,
) {
    assert!(
        matches!(server.child.try_wait(), Ok(None)),
        "the server process exited: {:?}",
        server.child.try_wait()
    );
    let health = http_client()
        .get(format!("http://{}/health", server.http_addr))
        .send()
        .await
        .expect("GET /health");
    assert_eq!(health.status().as_u16(), 200, "GET /health");
    let health: Value = health.json().await.expect("/health answers JSON");
    assert_eq!(health["status"], "healthy", "{health}");
    catalog(client).await;
    let plan = client
        .dry_run(proto::DryRunRequest {
            action: "scale_deployment".into(),
            target: common::mk_target("production", "Deployment", "web"),
            parameters: Some(common::to_struct(&json!({"replicas": 3}))),
            alert: None,
        })
        .await
        .expect("a valid dry run of scale_deployment on production/web")
        .into_inner();
    assert_eq!(
        plan.target.map(|t| t.name).as_deref(),
        Some("web"),
        "{}",
        plan.summary
    );
}

/// Outcomes by kind, printed at the end of a run.
#[derive(Default)]
struct Tally(BTreeMap<String, usize>);

impl Tally {
    fn add(&mut self, outcome: String) {
        *self.0.entry(outcome).or_default() += 1;
    }

    fn report(&self, door: &str, cases: usize, took: Duration) {
        let counts: Vec<String> = self.0.iter().map(|(k, n)| format!("{k}: {n}")).collect();
        eprintln!(
            "{door}: {cases} cases in {:.1}s ({})",
            took.as_secs_f64(),
            counts.join(", ")
        );
    }
}

// ---- the tests ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_answers_random_and_mutated_requests_with_the_right_codes() {
    let run = Run::from_env("gRPC");
    let mut server = start_server();
    let mut client = grpc_client(&server).await;
    assert_still_serving(&mut server, &mut client).await;
    let catalog = catalog(&mut client).await;
    let started = Instant::now();
    let mut tally = Tally::default();
    let mut outcomes = futures::stream::iter(0..run.cases)
        .map(|case| {
            let call = mk_grpc_case(&mut run.rng(case), &catalog);
            let mut client = client.clone();
            async move {
                let outcome =
                    tokio::time::timeout(PATIENCE, send_grpc(&mut client, call.call.clone())).await;
                let outcome = match outcome {
                    Ok(outcome) => outcome,
                    Err(_) => panic!(
                        "{}: no answer within {PATIENCE:?}",
                        call.describe(run, case)
                    ),
                };
                check_grpc(&call, outcome)
                    .unwrap_or_else(|why| panic!("{}: {why}", call.describe(run, case)))
            }
        })
        .buffer_unordered(IN_FLIGHT);
    while let Some(outcome) = outcomes.next().await {
        tally.add(outcome);
    }
    drop(outcomes);
    tally.report("gRPC", run.cases, started.elapsed());
    assert_still_serving(&mut server, &mut client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_answers_random_and_mutated_requests_with_json_naming_the_field() {
    let run = Run::from_env("HTTP");
    let mut server = start_server();
    let mut client = grpc_client(&server).await;
    assert_still_serving(&mut server, &mut client).await;
    let catalog = catalog(&mut client).await;
    let http = http_client();
    let base = format!("http://{}", server.http_addr);
    let started = Instant::now();
    let mut tally = Tally::default();
    let mut outcomes = futures::stream::iter(0..run.cases)
        .map(|case| {
            let request = mk_http_case(&mut run.rng(case), &catalog);
            let (http, base) = (http.clone(), base.clone());
            async move {
                let answer = send_http(&http, &base, &request).await.unwrap_or_else(|e| {
                    panic!("{}: no answer: {e:?}", request.describe(run, case))
                });
                check_http(&request, &answer).unwrap_or_else(|why| {
                    panic!(
                        "{}: {why}; answered {} {} {}",
                        request.describe(run, case),
                        answer.status,
                        answer.content_type,
                        brief(&String::from_utf8_lossy(&answer.body))
                    )
                })
            }
        })
        .buffer_unordered(IN_FLIGHT);
    while let Some(outcome) = outcomes.next().await {
        tally.add(outcome);
    }
    tally.report("HTTP", run.cases, started.elapsed());
    assert_still_serving(&mut server, &mut client).await;
}

/// Regression test (a server bug this fuzzing found, fixed since): a `parameters` Struct nested beyond
/// prost's recursion limit (100 messages) is refused with `INTERNAL: failed to decode Protobuf
/// message: … recursion limit reached`, tonic-prost's mapping of every decode error. The
/// request is well-formed protobuf and the client's mistake, so it should be
/// `INVALID_ARGUMENT` naming `parameters` (HTTP answers the same input 400 on `body`). The
/// random cases stay below the limit ([`GRPC_NESTING`]).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_parameters_nested_beyond_the_decoder_limit_are_invalid_argument() {
    let mut server = start_server();
    let mut client = grpc_client(&server).await;
    let mut parameters = common::to_struct(&json!({"replicas": 3}));
    parameters
        .fields
        .insert("nested".into(), mk_nested_value(60, false));
    let answer = client
        .dry_run(proto::DryRunRequest {
            action: "scale_deployment".into(),
            target: common::mk_target("production", "Deployment", "web"),
            parameters: Some(parameters),
            alert: None,
        })
        .await;
    assert_still_serving(&mut server, &mut client).await;
    let status = answer.expect_err("parameters nested 60 lists deep were accepted");
    assert_eq!(
        status.code(),
        Code::InvalidArgument,
        "parameters nested 60 lists deep: {}",
        brief(status.message())
    );
    assert!(
        names_a_field(status.message()),
        "{}",
        brief(status.message())
    );
}

/// Regression test (a server bug this fuzzing found, fixed since): a refusal quotes the refused value
/// whole (`action: unknown action "…"`, `execution "…" not found`), so a long value makes a
/// `grpc-message` longer than the 16 KiB of headers a default tonic client (hyper's h2) takes:
/// that client reports `INTERNAL`/`RESOURCE_EXHAUSTED: h2 protocol error` instead of the
/// refusal. 4,000 × `é` as the action (24 KiB percent-encoded) is enough; a 17,000-byte
/// execution id too. The server's answers are right, and reach a client with a larger limit:
/// the fuzzing client ([`GRPC_MAX_HEADER_LIST`]). Messages should quote a bounded prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_refusals_of_huge_values_reach_a_default_client() {
    let mut server = start_server();
    let mut client = grpc_client_with(&server, false).await;
    let action = client
        .dry_run(proto::DryRunRequest {
            action: "é".repeat(4_000),
            ..Default::default()
        })
        .await
        .map(drop);
    let lookup = client
        .get_execution(proto::GetExecutionRequest {
            execution_id: "x".repeat(HUGE),
            include_events: false,
        })
        .await
        .map(drop);
    assert_still_serving(&mut server, &mut client).await;
    let dry_run = GrpcCase {
        family: "a 4,000-character action",
        call: GrpcCall::DryRun(Default::default()),
    };
    let get = GrpcCase {
        family: "a 1 MiB execution id",
        call: GrpcCall::Get(Default::default()),
    };
    for (case, outcome) in [(dry_run, action), (get, lookup)] {
        check_grpc(&case, outcome).unwrap_or_else(|why| panic!("{}: {why}", case.family));
    }
}

/// Regression test (a server bug this fuzzing found, fixed since): a body over the HTTP door's 2 MiB
/// limit is refused as it should be (400, JSON, on `body`), but the server then closes the
/// connection, the rest of the body unread, without saying so: the 400 carries no
/// `Connection: close`. A keep-alive client sends its next request on the dead connection and
/// gets no answer (reqwest: `hyper::Error(IncompleteMessage)`; the random cases hit it when a
/// 3 MiB body shared the client's pool with others), and the sender of the big body itself may
/// see a broken pipe instead of the 400. The refusal should say `Connection: close` (or the
/// server drain a bounded rest of the body).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_a_body_over_the_limit_is_refused_and_the_connection_closed_openly() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut server = start_server();
    let mut connection = tokio::net::TcpStream::connect(&server.http_addr)
        .await
        .expect("connect to the HTTP door");
    let body = serde_json::to_vec(&json!({"action": "a".repeat(3 * HUGE)})).expect("a body");
    let head = format!(
        "POST /api/v1/dry-run HTTP/1.1\r\nHost: fuzz\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    connection
        .write_all(head.as_bytes())
        .await
        .expect("send the head");
    // The server may answer and close before it has read all of it.
    let _ = connection.write_all(&body).await;
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    while !answer.ends_with(b"}}") {
        match tokio::time::timeout(PATIENCE, connection.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&buffer[..n]),
        }
    }
    let answer = String::from_utf8_lossy(&answer).to_lowercase();
    let mut client = grpc_client(&server).await;
    assert_still_serving(&mut server, &mut client).await;
    assert!(
        answer.starts_with("http/1.1 400") && answer.contains(r#""field":"body""#),
        "{}",
        brief(&answer)
    );
    if !answer.contains("\r\nconnection: close\r\n") {
        let next = async {
            connection
                .write_all(b"GET /livez HTTP/1.1\r\nHost: fuzz\r\n\r\n")
                .await?;
            let n = connection.read(&mut buffer).await?;
            Ok::<_, std::io::Error>(String::from_utf8_lossy(&buffer[..n]).into_owned())
        };
        let next = tokio::time::timeout(PATIENCE, next).await;
        assert!(
            matches!(&next, Ok(Ok(text)) if text.starts_with("HTTP/1.1 200")),
            "the 400 kept the connection alive, yet the next request on it got {next:?}"
        );
    }
}

// ---- checking answers -----------------------------------------------------------------------

/// Whether an `INVALID_ARGUMENT` message starts with a field path: `parameters.replicas: …`.
fn names_a_field(message: &str) -> bool {
    message
        .split_once(": ")
        .is_some_and(|(field, _)| names_a_request_field(field))
}

/// Whether `field` is a path into a request (`parameters.replicas`, `alert.labels.app`).
fn names_a_request_field(field: &str) -> bool {
    FIELDS.contains(&field.split('.').next().unwrap_or_default())
}

/// The outcome's name for the tally, or why it is not an allowed one.
fn check_grpc(case: &GrpcCase, outcome: Result<(), Status>) -> Result<String, String> {
    let (ok_allowed, refusals) = case.call.expected();
    match outcome {
        // A status the client made up (the connection broke, a frame was refused), whatever
        // code it carries: the server's answer never arrived.
        Err(status) if std::error::Error::source(&status).is_some() => Err(format!(
            "no answer from the server: {:?} {}",
            status.code(),
            brief(status.message())
        )),
        Ok(()) if ok_allowed => Ok("OK".into()),
        Ok(()) => Err("accepted".into()),
        Err(status) if !refusals.contains(&status.code()) => Err(format!(
            "refused with {:?} (allowed: {refusals:?}): {}",
            status.code(),
            brief(status.message())
        )),
        Err(status)
            if status.code() == Code::InvalidArgument && !names_a_field(status.message()) =>
        {
            Err(format!(
                "INVALID_ARGUMENT names no field: {}",
                brief(status.message())
            ))
        }
        Err(status) => Ok(format!("{:?}", status.code())),
    }
}

/// What the HTTP door answered.
struct HttpAnswer {
    status: u16,
    content_type: String,
    body: bytes::Bytes,
}

/// The HTTP status each refusal code travels with.
fn http_status_of(code: Code) -> u16 {
    match code {
        Code::InvalidArgument => 400,
        Code::PermissionDenied => 403,
        Code::NotFound => 404,
        Code::FailedPrecondition | Code::AlreadyExists => 409,
        Code::ResourceExhausted => 429,
        Code::Unavailable => 503,
        _ => 500,
    }
}

fn code_named(name: &str) -> Option<Code> {
    Some(match name {
        "INVALID_ARGUMENT" => Code::InvalidArgument,
        "NOT_FOUND" => Code::NotFound,
        "FAILED_PRECONDITION" => Code::FailedPrecondition,
        "PERMISSION_DENIED" => Code::PermissionDenied,
        "ALREADY_EXISTS" => Code::AlreadyExists,
        "RESOURCE_EXHAUSTED" => Code::ResourceExhausted,
        "UNAVAILABLE" => Code::Unavailable,
        "INTERNAL" => Code::Internal,
        _ => return None,
    })
}

fn check_http(case: &HttpCase, answer: &HttpAnswer) -> Result<String, String> {
    if answer.status >= 500 {
        return Err(format!("server error {}", answer.status));
    }
    if !answer.content_type.starts_with("application/json") {
        return Err("the answer is not JSON".into());
    }
    let body: Value = serde_json::from_slice(&answer.body)
        .map_err(|e| format!("the body does not parse as JSON: {e}"))?;
    if (200..300).contains(&answer.status) {
        return match case.expect {
            HttpExpect::Any => Ok(answer.status.to_string()),
            _ => Err("accepted".into()),
        };
    }
    let error = &body["error"];
    let code = error["code"]
        .as_str()
        .and_then(code_named)
        .ok_or("no known error.code")?;
    if http_status_of(code) != answer.status {
        return Err(format!("{code:?} travels with the wrong status"));
    }
    let allowed = match case.expect {
        HttpExpect::Any => ANY_REFUSAL,
        HttpExpect::Malformed | HttpExpect::BadBody => MALFORMED,
    };
    if !allowed.contains(&code) {
        return Err(format!("refused with {code:?} (allowed: {allowed:?})"));
    }
    let message = error["message"].as_str().ok_or("no error.message")?;
    if code == Code::InvalidArgument {
        let field = error["field"].as_str().ok_or("no error.field")?;
        if !message.starts_with(&format!("{field}: ")) {
            return Err("error.message does not start with error.field".into());
        }
        if !names_a_request_field(field) && !case.extra_fields.iter().any(|e| e == field) {
            return Err(format!(
                "error.field {:?} is no request field",
                brief(field)
            ));
        }
        if matches!(case.expect, HttpExpect::BadBody) && field != "body" {
            return Err(format!(
                "an undecodable body refused on {field:?}, not body"
            ));
        }
    }
    Ok(format!("{} {code:?}", answer.status))
}

/// At most a few hundred characters of `text`, for failure messages about 1 MiB inputs.
fn brief(text: &str) -> String {
    const KEEP: usize = 300;
    if text.chars().count() <= KEEP {
        format!("{text:?}")
    } else {
        let kept: String = text.chars().take(KEEP).collect();
        format!("{kept:?}… ({} bytes)", text.len())
    }
}

// ---- plausible requests: what every family mutates ------------------------------------------

/// Objects of the demo scenario, by kind: most plausible requests name one, so that they reach
/// the actions' planning rather than stopping at NOT_FOUND.
const OBJECTS: &[(&str, &str, &str)] = &[
    ("Deployment", "production", "web"),
    ("Deployment", "production", "api"),
    ("Deployment", "production", "worker"),
    ("Deployment", "staging", "web"),
    ("StatefulSet", "production", "db"),
    ("DaemonSet", "kube-system", "node-exporter"),
    ("HorizontalPodAutoscaler", "production", "api"),
    ("PersistentVolumeClaim", "production", "data-db-0"),
    ("Node", "", "node-1"),
    ("Node", "", "node-2"),
    ("Node", "", "node-3"),
];
const NAMESPACES: &[&str] = &["production", "staging", "default", "kube-system", "missing"];
const NAMES: &[&str] = &[
    "web",
    "api",
    "db",
    "node-1",
    "node-2",
    "data-db-0",
    "missing",
];
/// Alert labels that name a target (`app`, `pod`, `resource: deployment/web`, …).
const LABEL_KEYS: &[&str] = &[
    "deployment",
    "pod",
    "app",
    "statefulset",
    "daemonset",
    "node",
    "instance",
    "namespace",
    "resource",
    "persistentvolumeclaim",
    "horizontalpodautoscaler",
    "severity",
];

fn pick<T: Copy>(rng: &mut StdRng, items: &[T]) -> T {
    *items.choose(rng).expect("a non-empty list")
}

/// A request for a real action on a plausible target, with plausible parameters, in the HTTP
/// door's shape (the gRPC cases convert it).
fn mk_plausible(rng: &mut StdRng, catalog: &[ActionDescriptor]) -> Value {
    let action = catalog.choose(rng).expect("a catalog");
    let kind = action.target_kinds.choose(rng).cloned().unwrap_or_default();
    let existing: Vec<_> = OBJECTS.iter().filter(|(k, _, _)| *k == kind).collect();
    let (namespace, name) = match existing.choose(rng) {
        Some((_, namespace, name)) if rng.random_bool(0.7) => (*namespace, *name),
        _ => (pick(rng, NAMESPACES), pick(rng, NAMES)),
    };
    let mut body = json!({
        "action": action.name,
        "target": {"namespace": namespace, "kind": kind, "name": name},
        "parameters": mk_parameters(rng, action),
    });
    if rng.random_bool(0.3) {
        body["alert"] = json!({
            "name": "KubePodCrashLooping",
            "severity": "critical",
            "labels": {"namespace": pick(rng, NAMESPACES), "app": pick(rng, NAMES)},
        });
    }
    body
}

/// Values of the right type within bounds for the required parameters and some others.
fn mk_parameters(rng: &mut StdRng, action: &ActionDescriptor) -> Value {
    use proto::ParameterType as T;
    let mut parameters = Map::new();
    for p in &action.parameters {
        if !p.required && rng.random_bool(0.6) {
            continue;
        }
        let value = match T::try_from(p.r#type).unwrap_or(T::Unspecified) {
            T::Integer => {
                let min = p.minimum.unwrap_or(0);
                let max = p.maximum.unwrap_or(min + 10).min(min + 10);
                json!(rng.random_range(min..=max))
            }
            T::Boolean => json!(rng.random_bool(0.5)),
            T::Quantity => json!(pick(rng, &["100m", "1", "256Mi", "1Gi", "2"])),
            T::Files => json!({"main.py": "print('hello')\n"}),
            T::String | T::Unspecified => match p.allowed_values.choose(rng) {
                Some(allowed) => json!(allowed),
                None => json!(pick(rng, &["web", "app", "example.com/key", "drill"])),
            },
        };
        parameters.insert(p.name.clone(), value);
    }
    Value::Object(parameters)
}

// ---- random values --------------------------------------------------------------------------

/// A string a careless or hostile client might send where a name belongs.
fn mk_nasty_string(rng: &mut StdRng) -> String {
    match rng.random_range(0..12) {
        0 => String::new(),
        1 => pick(rng, &[" ", "\t", "\n", " \r\n "]).into(),
        2 => (0..rng.random_range(1..8))
            .map(|_| char::from(pick(rng, &[0u8, 1, 7, 8, 0x0b, 0x0c, 0x1b, 0x1f, 0x7f])))
            .collect(),
        3 => pick(
            rng,
            &[
                "é",
                "日本語",
                "🦀",
                "\u{202E}web",
                "web\u{200B}",
                "\u{FEFF}web",
                "\u{FFFD}",
                "\u{FFFF}",
                "𝕨𝕖𝕓",
                "İ",
                "web\u{0}",
            ],
        )
        .into(),
        4 => pick(
            rng,
            &[
                "'; DROP TABLE executions; --",
                "%s%s%n",
                "{{.}}",
                "${jndi:ldap://x}",
                "\"}",
                "\\",
                "<script>",
                "../../etc/passwd",
                "a/b",
                "deployment/web",
                "/",
                "*",
            ],
        )
        .into(),
        5 => pick(
            rng,
            &[
                "Web", "web.", ".web", "-web", "web-", "web_1", "web..api", "a.b.c", "x",
            ],
        )
        .into(),
        6 => "a".repeat(pick(rng, &[63, 64, 253, 254, 4096])),
        7 => pick(
            rng,
            &["0", "-1", "1e309", "NaN", "true", "null", "[]", "{}"],
        )
        .into(),
        8 => (0..rng.random_range(0..40))
            .map(|_| char::from(rng.random_range(0x20u8..0x7f)))
            .collect(),
        9 => (0..rng.random_range(0..20))
            .map(|_| rng.random::<char>())
            .collect(),
        10 => "x".repeat(rng.random_range(256..20_000)),
        _ => {
            let mut name = pick(rng, NAMES).to_string();
            let at = rng.random_range(0..=name.len());
            name.insert(at, pick(rng, &['\0', '\n', '\u{7f}', ' ', '\u{1b}']));
            name
        }
    }
}

/// A 1 MiB string: one letter, a valid-looking name, or arbitrary characters.
fn mk_huge_string(rng: &mut StdRng) -> String {
    match rng.random_range(0..3) {
        0 => "a".repeat(HUGE),
        1 => "ab.".repeat(HUGE / 3),
        _ => {
            let mut s = String::with_capacity(HUGE + 4);
            while s.len() < HUGE {
                s.push(rng.random::<char>());
            }
            s
        }
    }
}

/// Numbers at the edges: zero in both signs, fractions, and the ends of i32, i64, u64, the
/// exactly representable integers and f64.
const EDGE_NUMBERS: &[f64] = &[
    0.0,
    -0.0,
    1.0,
    -1.0,
    0.5,
    101.0,
    i32::MAX as f64 + 1.0,
    (1u64 << 53) as f64,
    (1u64 << 53) as f64 + 2.0,
    9.0e15,
    i64::MAX as f64,
    i64::MIN as f64,
    u64::MAX as f64,
    1e308,
    -1e308,
    f64::MAX,
    f64::MIN,
    f64::MIN_POSITIVE,
    5e-324,
];

fn mk_number(rng: &mut StdRng) -> f64 {
    match rng.random_range(0..3) {
        0 => pick(rng, EDGE_NUMBERS),
        1 => rng.random_range(-1000..1000) as f64,
        _ => rng.random::<f64>() * 10f64.powi(rng.random_range(-10..20)),
    }
}

/// Any JSON value, `depth` levels deep at most.
fn mk_json_value(rng: &mut StdRng, depth: usize) -> Value {
    match rng.random_range(0..if depth == 0 { 5 } else { 7 }) {
        0 => Value::Null,
        1 => json!(rng.random_bool(0.5)),
        2 => json!(mk_number(rng)),
        3 => json!(rng.random::<i64>()),
        4 => json!(mk_nasty_string(rng)),
        5 => Value::Array(
            (0..rng.random_range(0..4))
                .map(|_| mk_json_value(rng, depth - 1))
                .collect(),
        ),
        _ => Value::Object(
            (0..rng.random_range(0..4))
                .map(|_| (mk_nasty_string(rng), mk_json_value(rng, depth - 1)))
                .collect(),
        ),
    }
}

/// Any protobuf `Value`, `depth` levels deep at most; unlike JSON, numbers may be NaN or
/// infinite.
fn mk_proto_value(rng: &mut StdRng, depth: usize) -> prost_types::Value {
    let kind = match rng.random_range(0..if depth == 0 { 6 } else { 8 }) {
        0 => Kind::NullValue(rng.random_range(0..3)),
        1 => Kind::BoolValue(rng.random_bool(0.5)),
        2 => Kind::NumberValue(mk_number(rng)),
        3 => Kind::NumberValue(pick(rng, &[f64::NAN, f64::INFINITY, f64::NEG_INFINITY])),
        4 => Kind::StringValue(mk_nasty_string(rng)),
        5 => return prost_types::Value { kind: None },
        6 => Kind::ListValue(prost_types::ListValue {
            values: (0..rng.random_range(0..4))
                .map(|_| mk_proto_value(rng, depth - 1))
                .collect(),
        }),
        _ => Kind::StructValue(mk_proto_struct(rng, depth - 1)),
    };
    prost_types::Value { kind: Some(kind) }
}

fn mk_proto_struct(rng: &mut StdRng, depth: usize) -> prost_types::Struct {
    prost_types::Struct {
        fields: (0..rng.random_range(0..4))
            .map(|_| (mk_nasty_string(rng), mk_proto_value(rng, depth)))
            .collect(),
    }
}

/// Lists in lists (or objects in objects), `depth` deep, around a number.
fn mk_nested_value(depth: usize, objects: bool) -> prost_types::Value {
    let mut value = prost_types::Value {
        kind: Some(Kind::NumberValue(1.0)),
    };
    for _ in 0..depth {
        let kind = if objects {
            Kind::StructValue(prost_types::Struct {
                fields: [("a".to_string(), value)].into(),
            })
        } else {
            Kind::ListValue(prost_types::ListValue {
                values: vec![value],
            })
        };
        value = prost_types::Value { kind: Some(kind) };
    }
    value
}

/// An action name no catalog has.
fn mk_unknown_action(rng: &mut StdRng) -> String {
    let stem = pick(
        rng,
        &["no_such_action", "drop_database", "scale", "restart_pod_"],
    );
    format!("{stem}{:08x}", rng.random::<u32>())
}

/// An execution id that names nothing: random text, or a UUID like the real ones.
fn mk_execution_id(rng: &mut StdRng) -> String {
    match rng.random_range(0..4) {
        0 => uuid::Uuid::new_v4().to_string(),
        1 if rng.random_bool(HUGE_SHARE) => mk_huge_string(rng),
        _ => mk_nasty_string(rng),
    }
}

// ---- gRPC cases -----------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum GrpcCall {
    DryRun(proto::DryRunRequest),
    Execute(proto::ExecuteRequest),
    Get(proto::GetExecutionRequest),
    Watch(proto::WatchExecutionRequest),
    Cancel(proto::CancelExecutionRequest),
    Approve(proto::ApproveExecutionRequest),
    Reject(proto::RejectExecutionRequest),
    List(proto::ListExecutionsRequest),
}

impl GrpcCall {
    /// Whether success is an allowed outcome, and the allowed refusals. Executes are always
    /// made invalid ([`poison_grpc`]), and random ids name no execution.
    fn expected(&self) -> (bool, &'static [Code]) {
        match self {
            GrpcCall::DryRun(_) => (true, ANY_REFUSAL),
            GrpcCall::Execute(_) => (false, MALFORMED),
            GrpcCall::List(_) => (true, MALFORMED),
            _ => (false, ANY_REFUSAL),
        }
    }
}

struct GrpcCase {
    family: &'static str,
    call: GrpcCall,
}

impl GrpcCase {
    fn describe(&self, run: Run, case: usize) -> String {
        format!(
            "FUZZ_SEED={} case {case} ({}): {}",
            run.seed,
            self.family,
            brief(&format!("{:?}", self.call))
        )
    }
}

async fn send_grpc(
    client: &mut ExecutorServiceClient<Channel>,
    call: GrpcCall,
) -> Result<(), Status> {
    match call {
        GrpcCall::DryRun(r) => client.dry_run(r).await.map(drop),
        GrpcCall::Execute(r) => client.execute(r).await.map(drop),
        GrpcCall::Get(r) => client.get_execution(r).await.map(drop),
        GrpcCall::Watch(r) => {
            let mut events = client.watch_execution(r).await?.into_inner();
            while let Some(event) = events.next().await {
                event?;
            }
            Ok(())
        }
        GrpcCall::Cancel(r) => client.cancel_execution(r).await.map(drop),
        GrpcCall::Approve(r) => client.approve_execution(r).await.map(drop),
        GrpcCall::Reject(r) => client.reject_execution(r).await.map(drop),
        GrpcCall::List(r) => client.list_executions(r).await.map(drop),
    }
}

type GrpcFamily = fn(&mut StdRng, &[ActionDescriptor]) -> proto::ExecuteRequest;

/// The families of mutated requests, each sent as a DryRun or as an Execute made invalid.
const GRPC_FAMILIES: &[(&str, GrpcFamily)] = &[
    ("plausible", grpc_plausible),
    ("nasty strings", grpc_nasty_strings),
    ("parameter values", grpc_parameter_values),
    ("unknown parameters", grpc_unknown_parameters),
    ("dropped fields", grpc_dropped_fields),
    ("alert labels", grpc_alert_labels),
    ("nested parameters", grpc_nested_parameters),
    ("random everything", grpc_random_everything),
];

fn mk_grpc_case(rng: &mut StdRng, catalog: &[ActionDescriptor]) -> GrpcCase {
    if rng.random_bool(0.1) {
        return GrpcCase {
            family: "lookups",
            call: mk_grpc_lookup(rng),
        };
    }
    let (family, mk) = if rng.random_bool(HUGE_SHARE) {
        ("huge string", grpc_huge_string as GrpcFamily)
    } else {
        pick(rng, GRPC_FAMILIES)
    };
    let mut request = mk(rng, catalog);
    let call = if rng.random_bool(0.25) {
        poison_grpc(rng, &mut request);
        GrpcCall::Execute(request)
    } else {
        GrpcCall::DryRun(proto::DryRunRequest {
            action: request.action,
            target: request.target,
            parameters: request.parameters,
            alert: request.alert,
        })
    };
    GrpcCase { family, call }
}

/// The HTTP-shaped request as gRPC's.
fn mk_execute_request(body: &Value) -> proto::ExecuteRequest {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let strings = |v: &Value| {
        v.as_object()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), text(v))).collect())
            .unwrap_or_default()
    };
    let target = &body["target"];
    let alert = &body["alert"];
    proto::ExecuteRequest {
        action: text(&body["action"]),
        target: target.is_object().then(|| proto::Target {
            cluster: text(&target["cluster"]),
            namespace: text(&target["namespace"]),
            kind: text(&target["kind"]),
            name: text(&target["name"]),
        }),
        parameters: body["parameters"]
            .is_object()
            .then(|| common::to_struct(&body["parameters"])),
        alert: alert.is_object().then(|| proto::AlertContext {
            name: text(&alert["name"]),
            severity: text(&alert["severity"]),
            labels: strings(&alert["labels"]),
            annotations: strings(&alert["annotations"]),
        }),
        ..Default::default()
    }
}

/// Makes an Execute request certainly invalid, so that no case runs an action: an unknown
/// action (with any timeout at all), or a timeout that is negative, zero or too long.
fn poison_grpc(rng: &mut StdRng, request: &mut proto::ExecuteRequest) {
    let max = MAX_TIMEOUT.as_secs() as i64;
    let nanos = |rng: &mut StdRng| rng.random_range(0..1_000_000_000);
    let timeout = |seconds, nanos| Some(prost_types::Duration { seconds, nanos });
    if rng.random_bool(0.5) {
        request.action = mk_unknown_action(rng);
        request.timeout = match rng.random_range(0..4) {
            0 => None,
            1 => timeout(rng.random(), rng.random()),
            2 => timeout(rng.random_range(0..=max), i32::MAX),
            _ => timeout(i64::MAX, nanos(rng)),
        };
    } else {
        request.timeout = match rng.random_range(0..5) {
            0 => timeout(rng.random_range(i64::MIN..0), nanos(rng)),
            1 => timeout(rng.random_range(0..=max), rng.random_range(i32::MIN..0)),
            2 => timeout(0, 0),
            3 => timeout(rng.random_range(max + 1..=i64::MAX), nanos(rng)),
            _ => timeout(max, rng.random_range(1..1_000_000_000)),
        };
    }
    if rng.random_bool(0.5) {
        request.request_id = mk_nasty_string(rng);
    }
    request.wait = rng.random_bool(0.5);
    request.rollback_on_failure = [None, Some(true), Some(false)][rng.random_range(0..3)];
}

fn grpc_plausible(rng: &mut StdRng, catalog: &[ActionDescriptor]) -> proto::ExecuteRequest {
    mk_execute_request(&mk_plausible(rng, catalog))
}

/// One of the request's strings, chosen at random (created when absent).
fn grpc_string_slot<'a>(rng: &mut StdRng, r: &'a mut proto::ExecuteRequest) -> &'a mut String {
    match rng.random_range(0..10) {
        0 => &mut r.action,
        1 => &mut r.target.get_or_insert_default().cluster,
        2 => &mut r.target.get_or_insert_default().namespace,
        3 => &mut r.target.get_or_insert_default().kind,
        4 => &mut r.target.get_or_insert_default().name,
        5 => &mut r.request_id,
        6 => &mut r.alert.get_or_insert_default().name,
        7 => &mut r.alert.get_or_insert_default().severity,
        8 => {
            let key = pick(rng, LABEL_KEYS).to_string();
            r.alert
                .get_or_insert_default()
                .labels
                .entry(key)
                .or_default()
        }
        _ => {
            let key = pick(rng, LABEL_KEYS).to_string();
            r.alert
                .get_or_insert_default()
                .annotations
                .entry(key)
                .or_default()
        }
    }
}

fn grpc_nasty_strings(rng: &mut StdRng, catalog: &[ActionDescriptor]) -> proto::ExecuteRequest {
    let mut r = grpc_plausible(rng, catalog);
    for _ in 0..rng.random_range(1..=3) {
        *grpc_string_slot(rng, &mut r) = mk_nasty_string(rng);
    }
    r
}

/// One 1 MiB string: a field, a parameter's value or name, or a label's name.
fn grpc_huge_string(rng: &mut StdRng, catalog: &[ActionDescriptor]) -> proto::ExecuteRequest {
    let mut r = grpc_plausible(rng, catalog);
    let huge = mk_huge_string(rng);
    match rng.random_range(0..4) {
        0 => {
            let parameters = r.parameters.get_or_insert_default();
            let name = parameters
                .fields
                .keys()
                .next()
                .cloned()
                .unwrap_or_else(|| "replicas".into());
            parameters.fields.insert(
                name,
                prost_types::Value {
                    kind: Some(Kind::StringValue(huge)),
                },
            );
        }
        1 => {
            let parameters = r.parameters.get_or_insert_default();
            parameters.fields.insert(
                huge,
                prost_types::Value {
                    kind: Some(Kind::NumberValue(1.0)),
                },
            );
        }
        2 => {
            r.alert
                .get_or_insert_default()
                .labels
                .insert(huge, "web".into());
        }
        _ => *grpc_string_slot(rng, &mut r) = huge,
    }
    r
}

/// Known parameters of the wrong type or out of range: strings, lists, NaN, 1e308, null.
fn grpc_parameter_values(rng: &mut StdRng, catalog: &[ActionDescriptor]) -> proto::ExecuteRequest {
    let mut r = grpc_plausible(rng, catalog);
    let known: Vec<String> = catalog
        .iter()
        .find(|a| a.name == r.action)
        .map(|a| a.parameters.iter().map(|p| p.name.clone()).collect())
        .unwrap_or_default();
    let parameters = r.parameters.get_or_insert_default();
    for _ in 0..rng.random_range(1..=3) {
        let Some(name) = known.choose(rng) else { break };
        parameters
            .fields
            .insert(name.clone(), mk_proto_value(rng, 2));
    }
    r
}

fn grpc_unknown_parameters(
    rng: &mut StdRng,
    catalog: &[ActionDescriptor],
) -> proto::ExecuteRequest {
    let mut r = grpc_plausible(rng, catalog);
    if rng.random_bool(0.2) {
        r.parameters = Some(mk_proto_struct(rng, 3));
    } else {
        let parameters = r.parameters.get_or_insert_default();
        for _ in 0..rng.random_range(1..=4) {
            parameters
                .fields
                .insert(mk_nasty_string(rng), mk_proto_value(rng, 2));
        }
    }
    r
}

/// Required fields left out: the action, the target or its parts, the parameters.
fn grpc_dropped_fields(rng: &mut StdRng, catalog: &[ActionDescriptor]) -> proto::ExecuteRequest {
    let mut r = grpc_plausible(rng, catalog);
    if rng.random_bool(0.3) {
        r.action.clear();
    }
    if rng.random_bool(0.3) {
        r.target = None;
    }
    if let Some(target) = &mut r.target {
        for part in [&mut target.namespace, &mut target.kind, &mut target.name] {
            if rng.random_bool(0.4) {
                part.clear();
            }
        }
    }
    if rng.random_bool(0.4) {
        r.parameters = None;
    } else if let Some(parameters) = &mut r.parameters {
        parameters.fields.retain(|_, _| rng.random_bool(0.5));
    }
    r
}

/// The target left to the alert's labels, which name it badly, twice, or not at all.
fn grpc_alert_labels(rng: &mut StdRng, catalog: &[ActionDescriptor]) -> proto::ExecuteRequest {
    let mut r = grpc_plausible(rng, catalog);
    let target = r.target.get_or_insert_default();
    for part in [&mut target.namespace, &mut target.kind, &mut target.name] {
        if rng.random_bool(0.6) {
            part.clear();
        }
    }
    let alert = r.alert.get_or_insert_default();
    for _ in 0..rng.random_range(0..6) {
        let key = if rng.random_bool(0.8) {
            pick(rng, LABEL_KEYS).to_string()
        } else {
            mk_nasty_string(rng)
        };
        let value = match rng.random_range(0..3) {
            0 => pick(rng, NAMES).to_string(),
            1 => format!(
                "{}/{}",
                pick(rng, &["deployment", "pod", "Node", "sts", "", "x"]),
                pick(rng, NAMES)
            ),
            _ => mk_nasty_string(rng),
        };
        if rng.random_bool(0.8) {
            alert.labels.insert(key, value);
        } else {
            alert.annotations.insert(key, value);
        }
    }
    r
}

/// A parameter nested up to [`GRPC_NESTING`] deep.
fn grpc_nested_parameters(rng: &mut StdRng, catalog: &[ActionDescriptor]) -> proto::ExecuteRequest {
    let mut r = grpc_plausible(rng, catalog);
    let name = pick(rng, &["replicas", "nested", "message"]).to_string();
    let depth = rng.random_range(1..=GRPC_NESTING);
    r.parameters
        .get_or_insert_default()
        .fields
        .insert(name, mk_nested_value(depth, rng.random_bool(0.5)));
    r
}

fn grpc_random_everything(rng: &mut StdRng, catalog: &[ActionDescriptor]) -> proto::ExecuteRequest {
    let action = if rng.random_bool(0.5) {
        catalog
            .choose(rng)
            .map(|a| a.name.clone())
            .unwrap_or_default()
    } else {
        mk_nasty_string(rng)
    };
    let strings = |rng: &mut StdRng| {
        (0..rng.random_range(0..4))
            .map(|_| (mk_nasty_string(rng), mk_nasty_string(rng)))
            .collect()
    };
    proto::ExecuteRequest {
        action,
        target: rng.random_bool(0.8).then(|| proto::Target {
            cluster: mk_nasty_string(rng),
            namespace: mk_nasty_string(rng),
            kind: mk_nasty_string(rng),
            name: mk_nasty_string(rng),
        }),
        parameters: rng.random_bool(0.8).then(|| mk_proto_struct(rng, 2)),
        alert: rng.random_bool(0.5).then(|| proto::AlertContext {
            name: mk_nasty_string(rng),
            severity: mk_nasty_string(rng),
            labels: strings(rng),
            annotations: strings(rng),
        }),
        ..Default::default()
    }
}

/// The other calls, on ids that name nothing, and listing with random filters.
fn mk_grpc_lookup(rng: &mut StdRng) -> GrpcCall {
    let execution_id = mk_execution_id(rng);
    match rng.random_range(0..6) {
        0 => GrpcCall::Get(proto::GetExecutionRequest {
            execution_id,
            include_events: rng.random_bool(0.5),
        }),
        1 => GrpcCall::Watch(proto::WatchExecutionRequest {
            execution_id,
            from_sequence: rng.random(),
        }),
        2 => GrpcCall::Cancel(proto::CancelExecutionRequest {
            execution_id,
            reason: mk_nasty_string(rng),
        }),
        3 => GrpcCall::Approve(proto::ApproveExecutionRequest {
            execution_id,
            approver: mk_nasty_string(rng),
            reason: mk_nasty_string(rng),
        }),
        4 => GrpcCall::Reject(proto::RejectExecutionRequest {
            execution_id,
            approver: mk_nasty_string(rng),
            reason: mk_nasty_string(rng),
        }),
        _ => {
            let maybe = |rng: &mut StdRng| {
                if rng.random_bool(0.5) {
                    String::new()
                } else {
                    mk_nasty_string(rng)
                }
            };
            GrpcCall::List(proto::ListExecutionsRequest {
                state: if rng.random_bool(0.8) {
                    rng.random_range(-2..16)
                } else {
                    rng.random()
                },
                action: maybe(rng),
                namespace: maybe(rng),
                page_size: pick(rng, &[0, 1, 50, 1000, 1001, u32::MAX]),
                page_token: maybe(rng),
                requester: maybe(rng),
            })
        }
    }
}

// ---- HTTP cases -----------------------------------------------------------------------------

/// What an HTTP case may get back.
#[derive(Clone, Copy, Debug)]
enum HttpExpect {
    /// Success or any refusal.
    Any,
    /// A refusal of a request that cannot be valid.
    Malformed,
    /// `400` on `body`: the body does not decode as a JSON object.
    BadBody,
}

struct HttpCase {
    family: &'static str,
    method: reqwest::Method,
    /// Path and query, percent-encoded.
    path: String,
    body: Option<Vec<u8>>,
    content_type: Option<&'static str>,
    last_event_id: Option<reqwest::header::HeaderValue>,
    expect: HttpExpect,
    /// Fields a refusal may name besides [`FIELDS`]: the query's own keys.
    extra_fields: Vec<String>,
}

impl HttpCase {
    fn describe(&self, run: Run, case: usize) -> String {
        let body = self
            .body
            .as_deref()
            .map(|b| brief(&String::from_utf8_lossy(b)))
            .unwrap_or_default();
        let last_event_id = self
            .last_event_id
            .as_ref()
            .map(|v| format!(" Last-Event-ID: {v:?}"))
            .unwrap_or_default();
        format!(
            "FUZZ_SEED={} case {case} ({}): {} {}{last_event_id} {body}",
            run.seed,
            self.family,
            self.method,
            brief(&self.path)
        )
    }
}

async fn send_http(
    client: &reqwest::Client,
    base: &str,
    case: &HttpCase,
) -> Result<HttpAnswer, reqwest::Error> {
    let mut request = client.request(case.method.clone(), format!("{base}{}", case.path));
    if let Some(content_type) = case.content_type {
        request = request.header("content-type", content_type);
    }
    if let Some(last_event_id) = &case.last_event_id {
        request = request.header("last-event-id", last_event_id.clone());
    }
    if let Some(body) = &case.body {
        request = request.body(body.clone());
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = response.bytes().await?;
    Ok(HttpAnswer {
        status,
        content_type,
        body,
    })
}

/// A body family: the body for DryRun, or made invalid ([`poison_json`]) for Execute.
type HttpFamily = fn(&mut StdRng, &[ActionDescriptor], bool) -> Vec<u8>;

/// The families of mutated bodies, and what any body of the family may get.
const HTTP_FAMILIES: &[(&str, HttpFamily, HttpExpect)] = &[
    ("plausible", http_plausible, HttpExpect::Any),
    ("flipped types", http_flipped_types, HttpExpect::Any),
    ("dropped fields", http_dropped_fields, HttpExpect::Any),
    ("unknown fields", http_unknown_fields, HttpExpect::Any),
    (
        "control characters",
        http_control_characters,
        HttpExpect::Any,
    ),
    ("invalid UTF-8", http_invalid_utf8, HttpExpect::BadBody),
    ("truncated", http_truncated, HttpExpect::BadBody),
    ("not an object", http_not_an_object, HttpExpect::BadBody),
    ("deeply nested", http_deeply_nested, HttpExpect::BadBody),
    ("nested parameters", http_nested_parameters, HttpExpect::Any),
    (
        "numbers out of range",
        http_numbers_out_of_range,
        HttpExpect::Any,
    ),
    ("timeouts", http_timeouts, HttpExpect::Any),
    ("alert labels", http_alert_labels, HttpExpect::Any),
    ("random everything", http_random_everything, HttpExpect::Any),
];

/// Content types a client might send; the door reads JSON whatever the header says.
const CONTENT_TYPES: &[Option<&str>] = &[
    Some("application/json"),
    Some("application/json"),
    None,
    Some("text/plain"),
    Some("application/x-www-form-urlencoded"),
    Some("application/json; charset=latin1"),
];

fn mk_http_case(rng: &mut StdRng, catalog: &[ActionDescriptor]) -> HttpCase {
    match rng.random_range(0..20) {
        0 => return mk_http_list(rng),
        1 => return mk_http_lookup(rng),
        _ => {}
    }
    let (family, mk, expect) = if rng.random_bool(HUGE_SHARE) {
        (
            "huge string",
            http_huge_string as HttpFamily,
            HttpExpect::Any,
        )
    } else {
        pick(rng, HTTP_FAMILIES)
    };
    let execute = rng.random_bool(0.25);
    let body = mk(rng, catalog, execute);
    HttpCase {
        family,
        method: reqwest::Method::POST,
        path: if execute {
            "/api/v1/execute"
        } else {
            "/api/v1/dry-run"
        }
        .into(),
        body: Some(body),
        content_type: pick(rng, CONTENT_TYPES),
        last_event_id: None,
        expect: match expect {
            HttpExpect::Any if execute => HttpExpect::Malformed,
            other => other,
        },
        extra_fields: Vec::new(),
    }
}

/// Makes an Execute body certainly invalid, so that no case runs an action: an unknown action,
/// or a `timeout_seconds` that is no number of seconds between 1 and the maximum.
fn poison_json(rng: &mut StdRng, body: &mut Value) {
    if !body.is_object() {
        return;
    }
    if rng.random_bool(0.5) {
        body["action"] = json!(mk_unknown_action(rng));
    } else {
        let max = MAX_TIMEOUT.as_secs_f64();
        body["timeout_seconds"] = [
            json!(0),
            json!(-1),
            json!(0.999),
            json!(max + 0.5),
            json!(1e308),
            json!(-1e308),
            json!(5e-324),
            json!("60"),
            json!("60s"),
            json!(true),
            json!([60]),
            json!({"seconds": 60}),
        ]
        .choose(rng)
        .cloned()
        .expect("a timeout");
    }
}

/// The body as sent: made invalid first when it goes to Execute, before any mutation of its
/// bytes, so that no mutation can turn it into a valid execution.
fn encode(rng: &mut StdRng, mut body: Value, execute: bool) -> Vec<u8> {
    if execute {
        poison_json(rng, &mut body);
    }
    serde_json::to_vec(&body).expect("serialize a JSON body")
}

/// A path into the body, chosen at random: a member, a nested one, a parameter or a label.
fn mk_field_path(rng: &mut StdRng, body: &Value) -> Vec<String> {
    let any_key = |rng: &mut StdRng, v: &Value, fallback: &str| {
        v.as_object()
            .and_then(|m| {
                m.keys()
                    .collect::<Vec<_>>()
                    .choose(rng)
                    .map(|k| k.to_string())
            })
            .unwrap_or_else(|| fallback.to_string())
    };
    let path: Vec<String> = match rng.random_range(0..12) {
        0 => vec!["action".into()],
        1 => vec!["target".into()],
        2 => vec![
            "target".into(),
            pick(rng, &["namespace", "kind", "name", "cluster"]).into(),
        ],
        3 => vec!["parameters".into()],
        4 | 5 => vec![
            "parameters".into(),
            any_key(rng, &body["parameters"], "replicas"),
        ],
        6 => vec!["alert".into()],
        7 => vec![
            "alert".into(),
            pick(rng, &["name", "severity", "labels", "annotations"]).into(),
        ],
        8 => vec![
            "alert".into(),
            "labels".into(),
            pick(rng, LABEL_KEYS).into(),
        ],
        9 => vec!["request_id".into()],
        10 => vec!["timeout_seconds".into()],
        _ => vec!["wait".into()],
    };
    path
}

/// Sets `path` in `body`, turning whatever lies on the way into objects.
fn set_path(body: &mut Value, path: &[String], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut at = body;
    for key in parents {
        if !at[key.as_str()].is_object() {
            at[key.as_str()] = json!({});
        }
        at = &mut at[key.as_str()];
    }
    at[last.as_str()] = value;
}

fn http_plausible(rng: &mut StdRng, catalog: &[ActionDescriptor], execute: bool) -> Vec<u8> {
    let body = mk_plausible(rng, catalog);
    encode(rng, body, execute)
}

/// A field of another type than its own: a number for the action, a list for the target, …
fn http_flipped_types(rng: &mut StdRng, catalog: &[ActionDescriptor], execute: bool) -> Vec<u8> {
    let mut body = mk_plausible(rng, catalog);
    for _ in 0..rng.random_range(1..=2) {
        let path = mk_field_path(rng, &body);
        let value = mk_json_value(rng, 2);
        set_path(&mut body, &path, value);
    }
    encode(rng, body, execute)
}

/// One 1 MiB string: a field, a parameter's value or name, or a label's name.
fn http_huge_string(rng: &mut StdRng, catalog: &[ActionDescriptor], execute: bool) -> Vec<u8> {
    let mut body = mk_plausible(rng, catalog);
    let huge = mk_huge_string(rng);
    let path = match rng.random_range(0..3) {
        0 => vec!["parameters".to_string(), huge.clone()],
        1 => vec!["alert".into(), "labels".into(), huge.clone()],
        _ => mk_field_path(rng, &body),
    };
    set_path(&mut body, &path, json!(huge));
    encode(rng, body, execute)
}

fn http_dropped_fields(rng: &mut StdRng, catalog: &[ActionDescriptor], execute: bool) -> Vec<u8> {
    let mut body = mk_plausible(rng, catalog);
    let drop_some = |rng: &mut StdRng, v: &mut Value| {
        if let Some(map) = v.as_object_mut() {
            map.retain(|_, _| rng.random_bool(0.5));
        }
    };
    drop_some(rng, &mut body["target"]);
    drop_some(rng, &mut body["parameters"]);
    drop_some(rng, &mut body);
    encode(rng, body, execute)
}

/// Members nobody defined, at the top, in the target, in the alert and in the parameters.
fn http_unknown_fields(rng: &mut StdRng, catalog: &[ActionDescriptor], execute: bool) -> Vec<u8> {
    let mut body = mk_plausible(rng, catalog);
    for _ in 0..rng.random_range(1..=4) {
        let parent = pick(rng, &["", "target", "alert", "parameters"]);
        let key = if rng.random_bool(0.5) {
            pick(
                rng,
                &[
                    "actions",
                    "Action",
                    "targets",
                    "dry_run",
                    "namespace",
                    "__proto__",
                ],
            )
            .into()
        } else {
            mk_nasty_string(rng)
        };
        let path: Vec<String> = [parent.to_string(), key]
            .into_iter()
            .filter(|p| !p.is_empty())
            .collect();
        let value = mk_json_value(rng, 1);
        set_path(&mut body, &path, value);
    }
    encode(rng, body, execute)
}

/// Control characters, escaped in strings (valid JSON), or raw anywhere in the body.
fn http_control_characters(
    rng: &mut StdRng,
    catalog: &[ActionDescriptor],
    execute: bool,
) -> Vec<u8> {
    let mut body = mk_plausible(rng, catalog);
    let path = mk_field_path(rng, &body);
    let control: String = (0..rng.random_range(1..4))
        .map(|_| char::from(rng.random_range(0u8..0x20)))
        .collect();
    set_path(&mut body, &path, json!(format!("web{control}")));
    let mut bytes = encode(rng, body, execute);
    if rng.random_bool(0.5) {
        for _ in 0..rng.random_range(1..4) {
            let at = rng.random_range(0..=bytes.len());
            bytes.insert(at, rng.random_range(0u8..0x20));
        }
    }
    bytes
}

/// Byte sequences that are not UTF-8: a stray continuation byte, an overlong NUL, an encoded
/// surrogate, a cut-off sequence, bytes no UTF-8 has.
const INVALID_UTF8: &[&[u8]] = &[
    b"\x80",
    b"\xC0\x80",
    b"\xED\xA0\x80",
    b"\xE2\x82",
    b"\xF8\x88\x80\x80\x80",
    b"\xFF",
    b"\xFE\xFF",
];

fn http_invalid_utf8(rng: &mut StdRng, catalog: &[ActionDescriptor], execute: bool) -> Vec<u8> {
    let body = mk_plausible(rng, catalog);
    let mut bytes = encode(rng, body, execute);
    // Inside a string, where a lenient decoder would be likeliest to let it through, or anywhere.
    let quotes: Vec<usize> = (0..bytes.len()).filter(|&i| bytes[i] == b'"').collect();
    let at = match quotes.choose(rng) {
        Some(&quote) if rng.random_bool(0.7) => quote + 1,
        _ => rng.random_range(0..=bytes.len()),
    };
    let bad = pick(rng, INVALID_UTF8);
    bytes.splice(at..at, bad.iter().copied());
    bytes
}

fn http_truncated(rng: &mut StdRng, catalog: &[ActionDescriptor], execute: bool) -> Vec<u8> {
    let body = mk_plausible(rng, catalog);
    let mut bytes = encode(rng, body, execute);
    bytes.truncate(rng.random_range(0..bytes.len()));
    bytes
}

fn http_not_an_object(rng: &mut StdRng, _: &[ActionDescriptor], _: bool) -> Vec<u8> {
    let fixed: &[&[u8]] = &[
        b"",
        b"   ",
        b"\r\n\t",
        b"null",
        b"[]",
        b"[{\"action\": \"scale_deployment\"}]",
        b"1",
        b"-0",
        b"1e400",
        b"\"scale_deployment\"",
        b"true",
        b"{",
        b"}",
        b"{}}",
        b"{} {}",
        b"\xEF\xBB\xBF{}",
        b"{'action': 'scale_deployment'}",
        b"{action: scale_deployment}",
        b"action=scale_deployment&replicas=3",
        b"\0",
    ];
    if rng.random_bool(0.7) {
        return pick(rng, fixed).to_vec();
    }
    // Random bytes, but never an object's opening brace first: that could, once in a great
    // while, be a valid empty object.
    let mut bytes: Vec<u8> = (0..rng.random_range(1..64)).map(|_| rng.random()).collect();
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
        bytes.insert(0, b'x');
    }
    bytes
}

/// Far beyond the parser's recursion limit: open brackets, balanced brackets, nested objects,
/// at the top or inside the parameters.
fn http_deeply_nested(rng: &mut StdRng, catalog: &[ActionDescriptor], execute: bool) -> Vec<u8> {
    let nested = match rng.random_range(0..4) {
        0 => "[".repeat(DEEP),
        1 => format!("{}{}", "[".repeat(DEEP), "]".repeat(DEEP)),
        2 => format!("{}1{}", "{\"a\":".repeat(DEEP), "}".repeat(DEEP)),
        _ => "{\"a\":".repeat(DEEP),
    };
    if rng.random_bool(0.3) {
        return nested.into_bytes();
    }
    let mut body = mk_plausible(rng, catalog);
    body["parameters"]["nested"] = json!("@NESTED@");
    let text = String::from_utf8(encode(rng, body, execute)).expect("serde_json writes UTF-8");
    text.replace("\"@NESTED@\"", &nested).into_bytes()
}

/// Nested within the parser's limit, where the value reaches the action's validation.
fn http_nested_parameters(
    rng: &mut StdRng,
    catalog: &[ActionDescriptor],
    execute: bool,
) -> Vec<u8> {
    let depth = rng.random_range(1..=100);
    let nested = if rng.random_bool(0.5) {
        format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
    } else {
        format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth))
    };
    let mut body = mk_plausible(rng, catalog);
    let path = vec![
        "parameters".to_string(),
        pick(rng, &["replicas", "nested", "message", "force"]).into(),
    ];
    set_path(&mut body, &path, json!("@NESTED@"));
    let text = String::from_utf8(encode(rng, body, execute)).expect("serde_json writes UTF-8");
    text.replace("\"@NESTED@\"", &nested).into_bytes()
}

/// Number literals at and past the edges of what JSON parsers take.
const NUMBER_TEXTS: &[&str] = &[
    "1e400",
    "-1e400",
    "1e-400",
    "123456789012345678901234567890",
    "-9223372036854775809",
    "9223372036854775808",
    "18446744073709551616",
    "9007199254740993",
    "-0",
    "-0.0",
    "0.0000001",
    "1.5",
    "3.0",
    "1E2",
    "NaN",
    "Infinity",
    "-Infinity",
    "0x10",
    "+1",
    ".5",
    "5.",
    "01",
    "1_000",
];

fn http_numbers_out_of_range(
    rng: &mut StdRng,
    catalog: &[ActionDescriptor],
    execute: bool,
) -> Vec<u8> {
    let mut body = mk_plausible(rng, catalog);
    let path = if rng.random_bool(0.6) {
        let name = body["parameters"]
            .as_object()
            .and_then(|p| {
                p.keys()
                    .collect::<Vec<_>>()
                    .choose(rng)
                    .map(|k| k.to_string())
            })
            .unwrap_or_else(|| "replicas".into());
        vec!["parameters".to_string(), name]
    } else {
        mk_field_path(rng, &body)
    };
    set_path(&mut body, &path, json!("@NUMBER@"));
    let text = String::from_utf8(encode(rng, body, execute)).expect("serde_json writes UTF-8");
    text.replace("\"@NUMBER@\"", pick(rng, NUMBER_TEXTS))
        .into_bytes()
}

/// `timeout_seconds`: negative, zero, fractions, past the maximum, huge, not a number.
fn http_timeouts(rng: &mut StdRng, catalog: &[ActionDescriptor], execute: bool) -> Vec<u8> {
    let mut body = mk_plausible(rng, catalog);
    let max = MAX_TIMEOUT.as_secs_f64();
    body["timeout_seconds"] = match rng.random_range(0..3) {
        0 => json!(pick(
            rng,
            &[
                -1.0,
                0.0,
                0.5,
                0.999,
                1.0,
                60.0,
                max,
                max + 0.001,
                max + 1.0,
                1e308,
                -1e308,
                5e-324
            ]
        )),
        1 => json!(mk_number(rng)),
        _ => mk_json_value(rng, 1),
    };
    encode(rng, body, execute)
}

/// The target left to the alert's labels, which name it badly, with values of any type.
fn http_alert_labels(rng: &mut StdRng, catalog: &[ActionDescriptor], execute: bool) -> Vec<u8> {
    let mut body = mk_plausible(rng, catalog);
    if let Some(target) = body["target"].as_object_mut() {
        target.retain(|_, _| rng.random_bool(0.4));
    }
    let mut labels = Map::new();
    for _ in 0..rng.random_range(0..6) {
        let key = if rng.random_bool(0.8) {
            pick(rng, LABEL_KEYS).to_string()
        } else {
            mk_nasty_string(rng)
        };
        let value = match rng.random_range(0..4) {
            0 => json!(pick(rng, NAMES)),
            1 => json!(format!(
                "{}/{}",
                pick(rng, &["deployment", "pod", "Node", "sts", "", "x"]),
                pick(rng, NAMES)
            )),
            2 => json!(mk_nasty_string(rng)),
            _ => mk_json_value(rng, 1),
        };
        labels.insert(key, value);
    }
    let place = pick(rng, &["labels", "annotations"]);
    body["alert"] = json!({ "name": mk_nasty_string(rng), place: labels });
    encode(rng, body, execute)
}

fn http_random_everything(rng: &mut StdRng, _: &[ActionDescriptor], execute: bool) -> Vec<u8> {
    let mut body = Map::new();
    for key in [
        "action",
        "target",
        "parameters",
        "alert",
        "request_id",
        "timeout_seconds",
        "wait",
    ] {
        if rng.random_bool(0.6) {
            body.insert(key.into(), mk_json_value(rng, 3));
        }
    }
    encode(rng, Value::Object(body), execute)
}

/// Percent-encodes everything but unreserved characters, as a path segment or query part.
fn percent_encode(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `GET /api/v1/executions` with random filters: unknown keys, bad states and page sizes,
/// invalid UTF-8 and broken percent-escapes.
fn mk_http_list(rng: &mut StdRng) -> HttpCase {
    let mut pairs = Vec::new();
    for _ in 0..rng.random_range(0..5) {
        let key = if rng.random_bool(0.7) {
            pick(
                rng,
                &[
                    "state",
                    "action",
                    "namespace",
                    "requester",
                    "page_size",
                    "page_token",
                ],
            )
            .to_string()
        } else {
            percent_encode(mk_nasty_string(rng).as_bytes())
        };
        let value = match rng.random_range(0..5) {
            0 => percent_encode(mk_nasty_string(rng).as_bytes()),
            1 => pick(
                rng,
                &[
                    "SUCCEEDED",
                    "succeeded",
                    "EXECUTION_STATE_FAILED",
                    "EXECUTION_STATE_",
                    "DONE",
                ],
            )
            .to_string(),
            2 => pick(
                rng,
                &[
                    "0",
                    "-1",
                    "1000",
                    "1001",
                    "18446744073709551616",
                    "1e3",
                    "0x10",
                ],
            )
            .to_string(),
            3 => pick(
                rng,
                &["%FF", "%C0%80", "%ED%A0%80", "%", "%zz", "%4", "a%00b"],
            )
            .to_string(),
            _ => String::new(),
        };
        pairs.push(if rng.random_bool(0.9) {
            format!("{key}={value}")
        } else {
            key
        });
    }
    let separator = pick(rng, &["&", "&", "&&", ";"]);
    let path = format!("/api/v1/executions?{}", pairs.join(separator));
    // An unknown key is refused under its own (decoded) name.
    let extra_fields = reqwest::Url::parse(&format!("http://h{path}"))
        .map(|url| url.query_pairs().map(|(k, _)| k.into_owned()).collect())
        .unwrap_or_default();
    HttpCase {
        family: "list queries",
        method: reqwest::Method::GET,
        path,
        body: None,
        content_type: None,
        expect: HttpExpect::Any,
        last_event_id: None,
        extra_fields,
    }
}

/// The routes that take an execution id, on ids that name nothing (some of them not UTF-8).
fn mk_http_lookup(rng: &mut StdRng) -> HttpCase {
    let id = mk_execution_id(rng);
    // URL parsers treat `.` and `..` as directory steps, whatever their encoding: a different
    // route. An empty id is no route either.
    let id = match id.as_str() {
        "" | "." | ".." => "x".to_string(),
        _ => id.chars().take(MAX_PATH_ID_CHARS).collect(),
    };
    let mut id = percent_encode(id.as_bytes());
    if rng.random_bool(0.2) {
        id.push_str(pick(rng, &["%FF", "%C0%80", "%ED%A0%80"]));
    }
    let (method, route, body) = match rng.random_range(0..6) {
        0 => ("GET", format!("/api/v1/executions/{id}"), None),
        1 => ("GET", format!("/api/v1/status/{id}"), None),
        2 => {
            let from = match rng.random_range(0..3) {
                0 => String::new(),
                1 => format!(
                    "?from_sequence={}",
                    pick(rng, &["0", "-1", "1e3", "%FF", "18446744073709551616"])
                ),
                _ => format!(
                    "?from_sequence={}",
                    percent_encode(mk_nasty_string(rng).as_bytes())
                ),
            };
            ("GET", format!("/api/v1/executions/{id}/events{from}"), None)
        }
        3 => ("POST", format!("/api/v1/executions/{id}/cancel"), Some(())),
        4 => ("POST", format!("/api/v1/executions/{id}/approve"), Some(())),
        _ => ("POST", format!("/api/v1/executions/{id}/reject"), Some(())),
    };
    let body = body.map(|()| match rng.random_range(0..4) {
        0 => Vec::new(),
        1 => serde_json::to_vec(&json!({
            "reason": mk_json_value(rng, 1),
            "approver": mk_json_value(rng, 1),
        }))
        .expect("serialize"),
        2 => serde_json::to_vec(&json!({
            "reason": mk_nasty_string(rng),
            "approver": mk_nasty_string(rng),
        }))
        .expect("serialize"),
        _ => http_not_an_object(rng, &[], false),
    });
    HttpCase {
        family: "lookups",
        method: method.parse().expect("a method"),
        last_event_id: rng.random_bool(0.3).then(|| mk_last_event_id(rng)),
        path: route,
        body,
        content_type: pick(rng, CONTENT_TYPES),
        expect: HttpExpect::Any,
        extra_fields: Vec::new(),
    }
}

/// A `Last-Event-ID` a header may carry: numbers out of range, text, bytes that are no UTF-8.
fn mk_last_event_id(rng: &mut StdRng) -> reqwest::header::HeaderValue {
    let bytes: Vec<u8> = match rng.random_range(0..3) {
        0 => pick(rng, &["0", "-1", "18446744073709551616", " 7 ", "1e3", ""]).into(),
        // What a header value may hold: tab, visible ASCII, and bytes from 0x80 up.
        1 => (0..rng.random_range(1..16))
            .map(|_| pick(rng, &[b'\t', b' ', b'7', b'x', 0x7e, 0x80, 0xc3, 0xff]))
            .collect(),
        _ => mk_nasty_string(rng)
            .bytes()
            .filter(|b| *b == b'\t' || (0x20..0x7f).contains(b) || *b >= 0x80)
            .collect(),
    };
    reqwest::header::HeaderValue::from_bytes(&bytes).expect("a header value")
}
