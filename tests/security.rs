//! TLS, mutual TLS, bearer tokens and authorization rules, end to end against the real binary
//! on the embedded simulated cluster. Certificates are made here with rcgen: a CA, a server
//! certificate for 127.0.0.1/localhost, a client certificate, and an unrelated second CA.

mod common;

use std::{path::Path, sync::Arc, time::Duration};

use common::{mk_request, mk_target, ServeProcess};
use executor_service::api::proto::{
    executor_service_client::ExecutorServiceClient, ExecutionState, GetExecutionRequest,
    ListActionsRequest, ListExecutionsRequest,
};
use k8s_openapi::api::apps::v1::Deployment;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use serde_json::{json, Value};
use tokio_rustls::rustls;
use tonic::{
    metadata::MetadataValue,
    transport::{Certificate, Channel, ClientTlsConfig, Identity},
    Code, Request,
};

const ALICE_TOKEN: &str = "alice-token-0123456789";
const ONCALL_TOKEN: &str = "oncall-token-9876543210";
const LEAD_TOKEN: &str = "lead-token-5555555555";
/// The CN of the client certificate, and so the identity of an mTLS caller.
const CLIENT_CN: &str = "deploy-bot";

// ---- certificates ---------------------------------------------------------------------------

/// A certificate and its key, as PEM.
struct Pem {
    cert: String,
    key: String,
}

struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        Ca {
            issuer: CertifiedIssuer::self_signed(params, key).unwrap(),
        }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A leaf certificate named `common_name` with these subject alternative names.
    fn issue(&self, common_name: &str, names: &[&str]) -> Pem {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

/// Everything a test server and its clients need, written to a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
    ca: Ca,
    server: Pem,
    client: Pem,
    stranger: Pem,
}

impl Pki {
    fn new() -> Pki {
        let ca = Ca::new("executor test CA");
        let server = ca.issue("executor-service", &["localhost", "127.0.0.1"]);
        let client = ca.issue(CLIENT_CN, &[]);
        // Same name, signed by a CA the server has never heard of.
        let stranger = Ca::new("another CA").issue(CLIENT_CN, &[]);
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki {
            dir,
            ca,
            server,
            client,
            stranger,
        };
        pki.write("ca.pem", &pki.ca.pem());
        pki.write("server.pem", &pki.server.cert);
        pki.write("server.key", &pki.server.key);
        pki
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.dir.path().join(name), text).unwrap();
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

// ---- servers and clients --------------------------------------------------------------------

fn sha256_hex(text: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// alice may scale and restart in staging only; oncall may do anything anywhere.
fn write_auth_files(dir: &Path) -> (String, String) {
    let tokens = dir.join("tokens.yaml");
    std::fs::write(
        &tokens,
        format!(
            "tokens:\n  - identity: alice\n    sha256: {}\n  - identity: oncall\n    token: {ONCALL_TOKEN}\n  - identity: lead\n    token: {LEAD_TOKEN}\n",
            sha256_hex(ALICE_TOKEN)
        ),
    )
    .unwrap();
    let authz = dir.join("authz.yaml");
    std::fs::write(
        &authz,
        format!(
            r#"rules:
  - identity: alice
    actions: [scale_deployment, restart_pod]
    namespaces: [staging]
  - identity: oncall
    actions: ["*"]
    namespaces: ["*"]
    approve: true
  - identity: {CLIENT_CN}
    actions: [scale_deployment]
    namespaces: [production]
  - identity: lead
    actions: [drain_node]
    namespaces: ["*"]
    run: false
    approve: true
"#
        ),
    )
    .unwrap();
    (tokens.display().to_string(), authz.display().to_string())
}

/// A server with bearer tokens and authorization rules, in plain text.
fn start_with_tokens(dir: &Path) -> ServeProcess {
    start_with_tokens_and(dir, "10s")
}

/// [`start_with_tokens`], checking the files for changes every `reload_interval` (`0s`: only
/// on SIGHUP).
fn start_with_tokens_and(dir: &Path, reload_interval: &str) -> ServeProcess {
    let (tokens, authz) = write_auth_files(dir);
    ServeProcess::start(&[
        "--auth-tokens",
        &tokens,
        "--authz",
        &authz,
        "--reload-interval",
        reload_interval,
    ])
}

async fn plain_client(server: &ServeProcess) -> ExecutorServiceClient<Channel> {
    let endpoint = format!("http://{}", server.addr);
    for _ in 0..50 {
        if let Ok(client) = ExecutorServiceClient::connect(endpoint.clone()).await {
            return client;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("gRPC server at {endpoint} did not come up");
}

/// A TLS channel that trusts `ca`, presenting `identity` when given.
async fn tls_channel(
    server: &ServeProcess,
    ca: &str,
    identity: Option<&Pem>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    if let Some(pem) = identity {
        tls = tls.identity(Identity::from_pem(&pem.cert, &pem.key));
    }
    Channel::from_shared(format!("https://{}", server.addr))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await
}

fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        MetadataValue::try_from(format!("Bearer {token}")).unwrap(),
    );
    request
}

fn scale_web(namespace: &str, replicas: i64) -> executor_service::api::proto::ExecuteRequest {
    let mut request = mk_request(
        "scale_deployment",
        mk_target(namespace, "Deployment", "web"),
        json!({ "replicas": replicas }),
    );
    request.wait = true;
    request
}

fn plain_http() -> reqwest::Client {
    common::plain_http()
}

/// An HTTPS client trusting `ca_pem`, presenting `identity` when given (rustls with ring, as
/// the server).
fn https_client(ca_pem: &str, identity: Option<&Pem>) -> reqwest::Client {
    use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let config = match identity {
        Some(pem) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(pem.cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(pem.key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .build()
        .unwrap()
}

async fn kube_client(server: &ServeProcess) -> kube::Client {
    common::kube_client_from(&server.kubeconfig).await
}

async fn replicas(kube: &kube::Client, namespace: &str, name: &str) -> i32 {
    let deployments: kube::Api<Deployment> = kube::Api::namespaced(kube.clone(), namespace);
    deployments
        .get(name)
        .await
        .unwrap()
        .spec
        .and_then(|s| s.replicas)
        .unwrap_or_default()
}

/// How many executions the server knows, asked as oncall.
async fn execution_count(client: &mut ExecutorServiceClient<Channel>) -> usize {
    client
        .list_executions(with_token(ListExecutionsRequest::default(), ONCALL_TOKEN))
        .await
        .expect("list as oncall")
        .into_inner()
        .executions
        .len()
}

// ---- bearer tokens and authorization ----------------------------------------------------------

#[tokio::test]
async fn calls_without_a_token_or_with_a_wrong_one_are_unauthenticated_and_nothing_runs() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_tokens(dir.path());
    let mut client = plain_client(&server).await;

    let status = client.execute(scale_web("staging", 3)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let status = client
        .execute(with_token(scale_web("staging", 3), "not-a-token"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let status = client
        .list_executions(ListExecutionsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");

    let http = plain_http();
    let url = format!("http://{}/api/v1/execute", server.http_addr);
    let body = json!({
        "action": "scale_deployment",
        "target": {"namespace": "staging", "kind": "Deployment", "name": "web"},
        "parameters": {"replicas": 3},
    });
    let response = http.post(&url).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.headers()["www-authenticate"].to_str().unwrap(),
        "Bearer"
    );
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "UNAUTHENTICATED");
    let response = http
        .post(&url)
        .bearer_auth("not-a-token")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    assert_eq!(
        execution_count(&mut client).await,
        0,
        "nothing may have run"
    );
    assert_eq!(
        replicas(&kube_client(&server).await, "staging", "web").await,
        2
    );

    // Probes, scrapers and grpcurl's reflection carry no token.
    let health = http
        .get(format!("http://{}/health", server.http_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let live = http
        .get(format!("http://{}/livez", server.http_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    let metrics = http
        .get(format!("http://{}/metrics", server.http_addr))
        .send()
        .await
        .unwrap();
    assert_ne!(metrics.status(), 401);
    let channel = Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let serving = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("health needs no token")
        .into_inner();
    assert_eq!(
        serving.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
}

#[tokio::test]
async fn a_token_whose_identity_may_not_act_in_production_is_denied_and_nothing_changes() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_tokens(dir.path());
    let mut client = plain_client(&server).await;
    let kube = kube_client(&server).await;

    let status = client
        .execute(with_token(scale_web("production", 5), ALICE_TOKEN))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(
        status.message(),
        "alice may not run scale_deployment in production"
    );
    // A dry run reveals nothing either.
    let dry_run = executor_service::api::proto::DryRunRequest {
        action: "scale_deployment".into(),
        target: mk_target("production", "Deployment", "web"),
        parameters: Some(common::to_struct(&json!({"replicas": 5}))),
        ..Default::default()
    };
    let status = client
        .dry_run(with_token(dry_run, ALICE_TOKEN))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");

    // The same over HTTP, with the target taken from the alert's labels (resolved first).
    let response = plain_http()
        .post(format!("http://{}/api/v1/execute", server.http_addr))
        .bearer_auth(ALICE_TOKEN)
        .json(&json!({
            "action": "scale_deployment",
            "parameters": {"replicas": 5},
            "alert": {"labels": {"namespace": "production", "deployment": "web"}},
        }))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "PERMISSION_DENIED");

    assert_eq!(
        execution_count(&mut client).await,
        0,
        "nothing may have run"
    );
    assert_eq!(
        replicas(&kube, "production", "web").await,
        3,
        "web unchanged"
    );
}

#[tokio::test]
async fn an_allowed_token_runs_and_its_identity_is_the_requester() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_tokens(dir.path());
    let mut client = plain_client(&server).await;
    let kube = kube_client(&server).await;

    let execution = client
        .execute(with_token(scale_web("staging", 3), ALICE_TOKEN))
        .await
        .expect("alice may scale in staging")
        .into_inner()
        .execution
        .unwrap();
    assert_eq!(
        execution.state,
        ExecutionState::Succeeded as i32,
        "{execution:?}"
    );
    assert_eq!(execution.requester, "alice");
    assert_eq!(replicas(&kube, "staging", "web").await, 3);
    let fetched = client
        .get_execution(with_token(
            GetExecutionRequest {
                execution_id: execution.id.clone(),
                include_events: false,
            },
            ALICE_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner()
        .execution
        .unwrap();
    assert_eq!(fetched.requester, "alice");

    let response = plain_http()
        .post(format!("http://{}/api/v1/execute", server.http_addr))
        .bearer_auth(ONCALL_TOKEN)
        .json(&json!({
            "action": "scale_deployment",
            "target": {"namespace": "production", "kind": "Deployment", "name": "web"},
            "parameters": {"replicas": 4},
            "wait": true,
        }))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["execution"]["state"], "SUCCEEDED", "{body}");
    assert_eq!(body["execution"]["requester"], "oncall");
    assert_eq!(replicas(&kube, "production", "web").await, 4);
}

#[tokio::test]
async fn a_caller_reads_only_executions_it_requested_or_may_run_or_approve() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_tokens(dir.path());
    let client = plain_client(&server).await;
    let run = |request, token| {
        let mut client = client.clone();
        async move {
            client
                .execute(with_token(request, token))
                .await
                .expect("execute")
                .into_inner()
                .execution
                .unwrap()
                .id
        }
    };
    let production = run(scale_web("production", 4), ONCALL_TOKEN).await;
    let staging = run(scale_web("staging", 3), ALICE_TOKEN).await;
    let get = |id: &str, token| {
        let mut client = client.clone();
        let request = with_token(
            GetExecutionRequest {
                execution_id: id.to_string(),
                include_events: true,
            },
            token,
        );
        async move { client.get_execution(request).await }
    };

    // alice may act only in staging: production's execution (its parameters, events and
    // result) is not hers to read, by get or by watch.
    let err = get(&production, ALICE_TOKEN).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        err.message()
            .contains("alice may not read executions of scale_deployment in production"),
        "{err:?}"
    );
    let watched = client
        .clone()
        .watch_execution(with_token(
            executor_service::api::proto::WatchExecutionRequest {
                execution_id: production.clone(),
                from_sequence: 0,
            },
            ALICE_TOKEN,
        ))
        .await;
    assert_eq!(
        watched.err().map(|e| e.code()),
        Some(Code::PermissionDenied)
    );
    assert!(get(&staging, ALICE_TOKEN).await.is_ok());
    // oncall may run anything anywhere, so reads both; lead approves only drains, so neither.
    assert!(get(&production, ONCALL_TOKEN).await.is_ok());
    assert!(get(&staging, ONCALL_TOKEN).await.is_ok());
    assert_eq!(
        get(&staging, LEAD_TOKEN).await.unwrap_err().code(),
        Code::PermissionDenied
    );

    let listed = |token| {
        let mut client = client.clone();
        async move {
            let mut ids: Vec<String> = client
                .list_executions(with_token(ListExecutionsRequest::default(), token))
                .await
                .expect("list")
                .into_inner()
                .executions
                .into_iter()
                .map(|e| e.id)
                .collect();
            ids.sort();
            ids
        }
    };
    assert_eq!(listed(ALICE_TOKEN).await, vec![staging.clone()]);
    let mut both = vec![production.clone(), staging.clone()];
    both.sort();
    assert_eq!(listed(ONCALL_TOKEN).await, both);
    assert!(listed(LEAD_TOKEN).await.is_empty());

    // The HTTP API answers the same: 403 naming the reason, and a filtered list.
    let http = plain_http();
    let base = format!("http://{}/api/v1/executions", server.http_addr);
    let response = http
        .get(format!("{base}/{production}"))
        .bearer_auth(ALICE_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let response = http
        .get(format!("{base}/{production}/events"))
        .bearer_auth(ALICE_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let body: Value = http
        .get(&base)
        .bearer_auth(ALICE_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = body["executions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![staging.as_str()], "{body}");
}

/// `executor_config_reloads_total{outcome}` as the server reports it.
async fn reloads(server: &ServeProcess, outcome: &str) -> u64 {
    let text = plain_http()
        .get(format!("http://{}/metrics", server.http_addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let prefix = format!("executor_config_reloads_total{{outcome=\"{outcome}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map_or(0, |v| v.trim().parse::<f64>().unwrap() as u64)
}

/// Sends SIGHUP and waits until the server counted one more reload with `outcome`.
async fn hang_up(server: &ServeProcess, outcome: &str) {
    let before = reloads(server, outcome).await;
    let status = std::process::Command::new("kill")
        .args(["-HUP", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    for _ in 0..200 {
        if reloads(server, outcome).await > before {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no {outcome} reload counted after SIGHUP");
}

#[tokio::test]
async fn sighup_puts_rotated_tokens_and_edited_rules_in_force_and_a_broken_file_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // Only the signal reloads here, never the file check between two of the test's writes.
    let server = start_with_tokens_and(dir.path(), "0s");
    let (tokens, authz) = (
        dir.path().join("tokens.yaml"),
        dir.path().join("authz.yaml"),
    );
    let mut client = plain_client(&server).await;
    let err = client
        .execute(with_token(scale_web("production", 2), ALICE_TOKEN))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    // Rotate alice's token and let her act in production too.
    const ROTATED: &str = "alice-rotated-token-2468";
    std::fs::write(
        &tokens,
        format!("tokens:\n  - identity: alice\n    token: {ROTATED}\n  - identity: oncall\n    token: {ONCALL_TOKEN}\n"),
    )
    .unwrap();
    std::fs::write(
        &authz,
        "rules:\n  - identity: alice\n    actions: [scale_deployment]\n    namespaces: [staging, production]\n  - identity: oncall\n    actions: [\"*\"]\n    namespaces: [\"*\"]\n",
    )
    .unwrap();
    hang_up(&server, "ok").await;
    let err = client
        .list_executions(with_token(ListExecutionsRequest::default(), ALICE_TOKEN))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "the old token is gone");
    let execution = client
        .execute(with_token(scale_web("production", 2), ROTATED))
        .await
        .expect("the rotated token and the new rule are in force")
        .into_inner()
        .execution
        .unwrap();
    assert_eq!(execution.requester, "alice");
    assert_eq!(execution.state, ExecutionState::Succeeded as i32);

    // A broken token file fails the whole reload: the valid rules written with it (taking
    // production away from alice) are not applied either.
    std::fs::write(&tokens, "tokens: [").unwrap();
    std::fs::write(
        &authz,
        "rules:\n  - identity: alice\n    actions: [scale_deployment]\n    namespaces: [staging]\n",
    )
    .unwrap();
    hang_up(&server, "failed").await;
    let execution = client
        .execute(with_token(scale_web("production", 3), ROTATED))
        .await
        .expect("the previous tokens and rules stay in force")
        .into_inner()
        .execution
        .unwrap();
    assert_eq!(execution.state, ExecutionState::Succeeded as i32);
}

#[tokio::test]
async fn a_rotated_token_file_is_picked_up_without_a_signal() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_tokens_and(dir.path(), "100ms");
    let tokens = dir.path().join("tokens.yaml");
    let mut client = plain_client(&server).await;
    const ROTATED: &str = "oncall-rotated-token-1357";
    let before = reloads(&server, "ok").await;
    // As a Secret update lands: new content, same path.
    std::fs::write(
        &tokens,
        format!("tokens:\n  - identity: oncall\n    token: {ROTATED}\n"),
    )
    .unwrap();
    for _ in 0..200 {
        if reloads(&server, "ok").await > before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        reloads(&server, "ok").await > before,
        "the change was not reloaded"
    );
    let err = client
        .list_executions(with_token(ListExecutionsRequest::default(), ONCALL_TOKEN))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(client
        .list_executions(with_token(ListExecutionsRequest::default(), ROTATED))
        .await
        .is_ok());
}

#[tokio::test]
async fn the_approver_is_the_authenticated_caller_and_must_be_allowed_to_approve() {
    use executor_service::api::proto::ApproveExecutionRequest;
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_tokens(dir.path());
    let mut client = plain_client(&server).await;
    let drain = mk_request(
        "drain_node",
        mk_target("", "Node", "node-3"),
        json!({"eviction_retry_seconds": 1, "timeout_seconds": 60}),
    );
    let status = client
        .execute(with_token(drain.clone(), LEAD_TOKEN))
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::PermissionDenied,
        "an approver-only rule runs nothing"
    );
    let waiting = client
        .execute(with_token(drain, ONCALL_TOKEN))
        .await
        .expect("oncall may drain")
        .into_inner()
        .execution
        .unwrap();
    assert_eq!(
        waiting.state,
        ExecutionState::WaitingApproval as i32,
        "{}",
        waiting.message
    );
    let approve = |approver: &str| ApproveExecutionRequest {
        execution_id: waiting.id.clone(),
        approver: approver.into(),
        reason: "failing disk".into(),
    };
    // The requester cannot approve by naming someone else: the caller is the approver.
    let status = client
        .approve_execution(with_token(approve("lead"), ONCALL_TOKEN))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("oncall requested"), "{status:?}");
    let status = client
        .approve_execution(with_token(approve("lead"), ALICE_TOKEN))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(
        status.message(),
        "alice may not approve drain_node on node/node-3"
    );
    let approved = client
        .approve_execution(with_token(approve("somebody-else"), LEAD_TOKEN))
        .await
        .expect("lead may approve drains")
        .into_inner()
        .execution
        .unwrap();
    let approval = approved.approval.expect("the approval is recorded");
    assert!(approval.approved);
    assert_eq!(approval.approver, "lead");
    assert_eq!(approved.requester, "oncall");
}

#[tokio::test]
async fn authorization_rules_without_authentication_refuse_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let (_, authz) = write_auth_files(dir.path());
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_executor-service"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "off",
            "--store",
            "memory:",
            "--authz",
            &authz,
        ])
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--authz needs"), "{stderr}");
}

// ---- TLS and mutual TLS -----------------------------------------------------------------------

#[tokio::test]
async fn tls_serves_a_client_that_verifies_the_server_against_its_ca() {
    let pki = Pki::new();
    let server = ServeProcess::start(&[
        "--tls-cert",
        &pki.path("server.pem"),
        "--tls-key",
        &pki.path("server.key"),
    ]);
    let channel = tls_channel(&server, &pki.ca.pem(), None)
        .await
        .expect("TLS handshake with the right CA");
    let actions = ExecutorServiceClient::new(channel)
        .list_actions(ListActionsRequest::default())
        .await
        .expect("ListActions over TLS")
        .into_inner()
        .actions;
    assert!(actions.iter().any(|a| a.name == "scale_deployment"));

    let response = https_client(&pki.ca.pem(), None)
        .get(format!("https://{}/api/v1/actions", server.http_addr))
        .send()
        .await
        .expect("HTTPS with the right CA");
    assert_eq!(response.status(), 200);

    // A client that trusts another CA does not accept the server.
    let other_ca = Ca::new("unrelated CA").pem();
    let refused = match tls_channel(&server, &other_ca, None).await {
        Err(_) => true,
        Ok(channel) => ExecutorServiceClient::new(channel)
            .list_actions(ListActionsRequest::default())
            .await
            .is_err(),
    };
    assert!(
        refused,
        "a server certificate from an unknown CA was accepted"
    );
}

#[tokio::test]
async fn mutual_tls_refuses_a_client_certificate_from_another_ca_and_names_the_right_one() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (_, authz) = write_auth_files(dir.path());
    let server = ServeProcess::start(&[
        "--tls-cert",
        &pki.path("server.pem"),
        "--tls-key",
        &pki.path("server.key"),
        "--tls-client-ca",
        &pki.path("ca.pem"),
        "--authz",
        &authz,
        "--health-listen",
        "127.0.0.1:0",
    ]);
    let ca = pki.ca.pem();

    // Probes and scrapers have no client certificate: the plain health port serves them, and
    // nothing else.
    let plain = plain_http();
    let health = format!("http://{}", server.health_addr);
    assert_eq!(
        plain
            .get(format!("{health}/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        plain
            .get(format!("{health}/metrics"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let api = plain
        .get(format!("{health}/api/v1/actions"))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 404);

    // A certificate from the wrong CA, or none, fails the handshake: no call gets through.
    for identity in [Some(&pki.stranger), None] {
        let outcome = match tls_channel(&server, &ca, identity).await {
            Err(e) => Err(format!("connect: {e:?}")),
            Ok(channel) => ExecutorServiceClient::new(channel)
                .list_actions(ListActionsRequest::default())
                .await
                .map(|_| ())
                .map_err(|s| format!("{:?}: {}", s.code(), s.message())),
        };
        let error = outcome.expect_err("a client without a certificate from the CA got in");
        assert!(
            !error.contains("Unauthenticated"),
            "refused at the handshake, not by the API: {error}"
        );
    }
    for identity in [Some(&pki.stranger), None] {
        let result = https_client(&ca, identity)
            .get(format!("https://{}/api/v1/actions", server.http_addr))
            .send()
            .await;
        assert!(
            result.is_err(),
            "HTTPS without the right certificate: {result:?}"
        );
    }

    // The right certificate works; its CN is the identity, recorded and authorized.
    let channel = tls_channel(&server, &ca, Some(&pki.client))
        .await
        .expect("mTLS with the right certificate");
    let mut client = ExecutorServiceClient::new(channel);
    let execution = client
        .execute(scale_web("production", 4))
        .await
        .expect("deploy-bot may scale in production")
        .into_inner()
        .execution
        .unwrap();
    assert_eq!(execution.requester, CLIENT_CN);
    assert_eq!(
        execution.state,
        ExecutionState::Succeeded as i32,
        "{execution:?}"
    );
    let status = client.execute(scale_web("staging", 4)).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");

    let response = https_client(&ca, Some(&pki.client))
        .post(format!("https://{}/api/v1/execute", server.http_addr))
        .json(&json!({
            "action": "scale_deployment",
            "target": {"namespace": "production", "kind": "Deployment", "name": "web"},
            "parameters": {"replicas": 5},
            "wait": true,
        }))
        .send()
        .await
        .expect("HTTPS with the right certificate");
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["execution"]["requester"], CLIENT_CN);
}

/// Naming a cluster reveals nothing to a caller who may not act: alice may act only in
/// staging, so asking for production on a cluster that does not exist is a denial, not a list
/// of the configured contexts. Where she may act, an unknown cluster is named as such, still
/// without the list.
#[tokio::test]
async fn an_unknown_cluster_is_refused_after_authorization_without_listing_the_configured_ones() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_tokens(dir.path());
    let mut client = plain_client(&server).await;
    let on_cluster = |namespace: &str, cluster: &str| {
        let mut request = scale_web(namespace, 2);
        if let Some(target) = request.target.as_mut() {
            target.cluster = cluster.to_string();
        }
        request
    };
    let status = client
        .execute(with_token(
            on_cluster("production", "no-such-cluster"),
            ALICE_TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(!status.message().contains("sim"), "{}", status.message());
    let status = client
        .execute(with_token(
            on_cluster("staging", "no-such-cluster"),
            ALICE_TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(
        status.message(),
        "target.cluster: unknown cluster \"no-such-cluster\""
    );
}

/// `anonymous` is what unauthenticated callers are recorded as; a token naming it would let
/// its holder pass for one (and approve what an anonymous caller requested).
#[tokio::test]
async fn a_token_file_naming_the_reserved_anonymous_identity_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.yaml");
    std::fs::write(
        &tokens,
        "tokens:\n  - identity: anonymous\n    token: t0k\n",
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_executor-service"))
        .args(["serve", "--listen", "127.0.0.1:0", "--http-listen", "off"])
        .args(["--store", "memory:", "--sim-kubeconfig-out"])
        .arg(dir.path().join("sim.kubeconfig"))
        .arg("--auth-tokens")
        .arg(&tokens)
        .env_remove("KUBECONFIG")
        .output()
        .expect("run serve");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("\"anonymous\" is reserved"), "{stderr}");
}
