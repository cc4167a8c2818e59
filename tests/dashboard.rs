//! The dashboard in a real headless Chromium (Debian's `chromium` and `chromium-driver`),
//! driven over WebDriver: the live table, one execution's events and progress, an approval
//! from the page, the run form's field errors, nothing shown without a token, and CORS from
//! pages of other origins (the HTTP API, an event stream and gRPC-Web). Screenshots of each
//! page go to `target/dashboard/` for a person to look at.

mod common;

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::{kube_client_from, plain_http, ServeProcess};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

/// How long the page may take to show something.
const WITHIN: Duration = Duration::from_secs(60);

/// A chromedriver on a free port of 127.0.0.1 and a headless Chromium session; both end on drop.
struct Browser {
    client: Client,
    driver: Child,
}

impl Browser {
    async fn start() -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver; .ci/run installs it)");
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while plain_http()
            .get(format!("{url}/status"))
            .send()
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,1000"],
            }),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&url)
            .await
            .expect("a Chromium session");
        Browser { client, driver }
    }

    /// Waits until the JavaScript expression `condition` is true on the page.
    async fn until(&self, what: &str, condition: &str) {
        let deadline = Instant::now() + WITHIN;
        loop {
            let value = self
                .client
                .execute(&format!("return !!({condition});"), vec![])
                .await
                .unwrap_or(Value::Bool(false));
            if value == Value::Bool(true) {
                return;
            }
            if Instant::now() > deadline {
                self.shoot(&format!("failed-{}", what.replace(' ', "-")))
                    .await;
                let text = self.text("document.body.innerText").await;
                panic!("the page never showed {what} ({condition}); it shows:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The value of a JavaScript expression, as text.
    async fn text(&self, expression: &str) -> String {
        match self
            .client
            .execute(&format!("return String({expression});"), vec![])
            .await
            .unwrap()
        {
            Value::String(s) => s,
            other => other.to_string(),
        }
    }

    async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    async fn css(&self, selector: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(WITHIN)
            .for_element(Locator::Css(selector))
            .await
            .unwrap_or_else(|e| panic!("{selector}: {e}"))
    }

    /// A screenshot under `target/dashboard/NAME.png`.
    async fn shoot(&self, name: &str) {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/dashboard");
        std::fs::create_dir_all(&dir).unwrap();
        if let Ok(png) = self.client.screenshot().await {
            std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

async fn execute(base: &str, token: Option<&str>, body: Value) -> Value {
    let mut request = plain_http()
        .post(format!("{base}/api/v1/execute"))
        .json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let answer: Value = request.send().await.unwrap().json().await.unwrap();
    answer["execution"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_follows_executions_approves_a_drain_and_shows_field_errors() {
    let server = ServeProcess::start(&[]);
    let base = format!("http://{}", server.http_addr);
    let browser = Browser::start().await;

    // The table updates live when an execution is started from outside.
    browser.goto(&format!("{base}/#/executions")).await;
    browser
        .until("the table", "document.querySelector('#executions-body')")
        .await;
    let scaled = execute(
        &base,
        None,
        json!({"action": "scale_deployment", "target": {"namespace": "production", "kind": "Deployment", "name": "worker"},
               "parameters": {"replicas": 3}}),
    )
    .await;
    let id = scaled["id"].as_str().unwrap();
    browser
        .until(
            "the new execution, ended",
            &format!("document.querySelector('#executions-body tr[data-id=\"{id}\"] [data-state=\"SUCCEEDED\"]')"),
        )
        .await;
    browser.shoot("executions").await;

    // One execution: events arrive, the progress bar moves to done.
    let restart = execute(
        &base,
        None,
        json!({"action": "rolling_restart_deployment", "target": {"namespace": "production", "kind": "Deployment", "name": "web"}}),
    )
    .await;
    let id = restart["id"].as_str().unwrap();
    browser.goto(&format!("{base}/#/execution/{id}")).await;
    browser
        .until(
            "the rollout's progress events and the bar at done",
            "document.querySelectorAll('#events li[data-progress]').length > 0 \
             && document.getElementById('progress').value === document.getElementById('progress').max \
             && document.getElementById('progress-text').textContent === 'done: SUCCEEDED' \
             && document.querySelector('#execution-summary [data-state=\"SUCCEEDED\"]')",
        )
        .await;
    let events = browser
        .text("document.querySelectorAll('#events li').length")
        .await;
    let stored: Value = plain_http()
        .get(format!("{base}/api/v1/executions/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        events,
        stored["events"].as_array().unwrap().len().to_string(),
        "every event shown once"
    );
    browser.shoot("execution").await;

    // A drain waits for approval; it is approved from the page and runs.
    let drain = execute(
        &base,
        None,
        json!({"action": "drain_node", "target": {"kind": "Node", "name": "node-3"},
               "parameters": {"ignore_daemonsets": true, "force": true}}),
    )
    .await;
    assert_eq!(drain["state"], "WAITING_APPROVAL", "{drain}");
    let id = drain["id"].as_str().unwrap();
    browser.goto(&format!("{base}/#/approvals")).await;
    browser
        .until(
            "the drain with its countdown",
            &format!("/\\d+m/.test(document.querySelector('#approvals-body tr[data-id=\"{id}\"] .countdown')?.textContent || '')"),
        )
        .await;
    browser.shoot("approvals").await;
    browser
        .css(&format!("#approvals-body tr[data-id=\"{id}\"] a"))
        .await
        .click()
        .await
        .unwrap();
    browser
        .css("#approver")
        .await
        .send_keys("bob")
        .await
        .unwrap();
    browser
        .css("#approval-reason")
        .await
        .send_keys("maintenance window")
        .await
        .unwrap();
    browser.css("#approve").await.click().await.unwrap();
    browser
        .until(
            "the drain approved and done",
            "document.querySelector('#execution-summary [data-state=\"SUCCEEDED\"]') \
             && document.body.innerText.includes('approved by bob')",
        )
        .await;
    browser.shoot("drain-approved").await;
    let kube = kube_client_from(&server.kubeconfig).await;
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(kube.clone());
    let node = nodes.get("node-3").await.unwrap();
    assert_eq!(node.spec.unwrap().unschedulable, Some(true));

    // The run form: a bad value shows the server's error on its field; a good one runs after
    // its dry run shows the diff.
    browser.goto(&format!("{base}/#/run")).await;
    browser
        .css("#run-action")
        .await
        .select_by_value("scale_deployment")
        .await
        .unwrap();
    browser
        .css("[id='f-target.namespace']")
        .await
        .send_keys("production")
        .await
        .unwrap();
    browser
        .css("[id='f-target.name']")
        .await
        .send_keys("web")
        .await
        .unwrap();
    let replicas = browser.css("[id='f-parameters.replicas']").await;
    replicas.send_keys("-5").await.unwrap();
    browser.css("#run-dry-run").await.click().await.unwrap();
    browser
        .until(
            "the server's error on parameters.replicas",
            "document.getElementById('run-error').dataset.field === 'parameters.replicas' \
             && document.getElementById('run-error').textContent.startsWith('parameters.replicas: ') \
             && document.getElementById('f-parameters.replicas').getAttribute('aria-invalid') === 'true'",
        )
        .await;
    browser.shoot("run-field-error").await;
    replicas.clear().await.unwrap();
    replicas.send_keys("5").await.unwrap();
    browser.css("#run-dry-run").await.click().await.unwrap();
    browser
        .until(
            "the dry run's diff, the change marked",
            "document.querySelector('#run-preview mark') && !document.getElementById('run-execute').disabled",
        )
        .await;
    browser.shoot("run-dry-run").await;
    browser.css("#run-execute").await.click().await.unwrap();
    browser
        .until(
            "the new execution, ended",
            "location.hash.startsWith('#/execution/') \
             && document.querySelector('#execution-summary [data-state=\"SUCCEEDED\"]')",
        )
        .await;
    let deployments: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::namespaced(kube, "production");
    assert_eq!(
        deployments.get("web").await.unwrap().spec.unwrap().replicas,
        Some(5)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tokens_on_the_page_shows_nothing_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.yaml");
    std::fs::write(
        &tokens,
        "tokens:\n  - identity: alice\n    token: dashboard-test-token\n",
    )
    .unwrap();
    let server = ServeProcess::start(&["--auth-tokens", tokens.to_str().unwrap()]);
    let base = format!("http://{}", server.http_addr);
    let known = execute(
        &base,
        Some("dashboard-test-token"),
        json!({"action": "scale_deployment", "target": {"namespace": "production", "kind": "Deployment", "name": "worker"},
               "parameters": {"replicas": 3}}),
    )
    .await;
    let id = known["id"].as_str().expect("an execution").to_string();
    let browser = Browser::start().await;
    browser.goto(&format!("{base}/#/executions")).await;
    browser
        .until(
            "the request for a token",
            "document.getElementById('notice').textContent.includes('Authentication required')",
        )
        .await;
    for hash in [
        "#/executions",
        "#/approvals",
        "#/run",
        &format!("#/execution/{id}"),
    ] {
        browser.goto(&format!("{base}/{hash}")).await;
        browser
            .until(
                "the request for a token",
                "document.getElementById('notice').textContent.includes('Authentication required')",
            )
            .await;
        let shown = browser.text("document.body.innerHTML").await;
        assert!(!shown.contains("worker"), "{hash} shows data: {shown}");
        assert!(
            !shown.contains("scale_deployment"),
            "{hash} shows data: {shown}"
        );
    }
    browser.shoot("no-token").await;
    browser.goto(&format!("{base}/#/executions")).await;
    browser
        .css("#token")
        .await
        .send_keys("dashboard-test-token")
        .await
        .unwrap();
    browser
        .css("#token-form button[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    browser
        .until(
            "the execution, with the token",
            &format!("document.querySelector('#executions-body tr[data-id=\"{id}\"]')"),
        )
        .await;
    browser.shoot("with-token").await;
}

/// Serves `html` at `/` on a port of its own: a page of another origin.
async fn page_server(html: impl Fn(SocketAddr) -> String + Send + Sync + 'static) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let page = html(addr);
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(move || {
            let page = page.clone();
            async move { axum::response::Html(page) }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// A page that calls the executor from its own origin and writes what happened in `#out`.
fn calling_page(http: &str, grpc: &str, execution: &str) -> String {
    format!(
        r#"<!doctype html><html><body><pre id="out"></pre><script>
const out = {{}};
async function run() {{
  try {{ const r = await fetch("{http}/api/v1/actions"); out.http = r.status; out.actions = (await r.json()).actions.length; }}
  catch (e) {{ out.http = "refused"; }}
  try {{ const r = await fetch("{http}/api/v1/executions/{execution}/events"); out.sse = (await r.text()).includes("event: execution_event"); }}
  catch (e) {{ out.sse = "refused"; }}
  try {{
    const r = await fetch("{grpc}/executor.v1.ExecutorService/ListActions", {{method: "POST",
      headers: {{"content-type": "application/grpc-web+proto", "x-grpc-web": "1"}}, body: new Uint8Array([0, 0, 0, 0, 0])}});
    out.grpc = r.status; out.grpc_bytes = (await r.arrayBuffer()).byteLength;
  }} catch (e) {{ out.grpc = "refused"; }}
  try {{
    const r = await fetch("{grpc}/executor.v1.ExecutorService/GetExecution", {{method: "POST",
      headers: {{"content-type": "application/grpc-web+proto", "x-grpc-web": "1"}}, body: new Uint8Array([0, 0, 0, 0, 0])}});
    out.grpc_status = r.headers.get("grpc-status"); out.grpc_message = decodeURIComponent(r.headers.get("grpc-message") || "");
  }} catch (e) {{ out.grpc_status = "refused"; }}
  document.getElementById("out").textContent = JSON.stringify(out);
}}
run();
</script></body></html>"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_origin_calls_the_api_streams_and_grpc_web_and_another_origin_cannot() {
    // The page's origin must be known before the server starts: its port first.
    let allowed_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let allowed_port = allowed_listener.local_addr().unwrap().port();
    drop(allowed_listener);
    let origin = format!("http://127.0.0.1:{allowed_port}");
    let server = ServeProcess::start(&["--cors-allow-origin", &origin]);
    let http = format!("http://{}", server.http_addr);
    let grpc = format!("http://{}", server.addr);
    let done = execute(
        &http,
        None,
        json!({"action": "scale_deployment", "wait": true,
               "target": {"namespace": "production", "kind": "Deployment", "name": "worker"},
               "parameters": {"replicas": 3}}),
    )
    .await;
    let id = done["id"].as_str().unwrap().to_string();
    let page = calling_page(&http, &grpc, &id);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", allowed_port))
        .await
        .unwrap();
    let app = axum::Router::new().route(
        "/",
        axum::routing::get({
            let page = page.clone();
            move || async move { axum::response::Html(page) }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    let other = page_server(move |_| page.clone()).await;

    let browser = Browser::start().await;
    browser.goto(&format!("{origin}/")).await;
    browser
        .until(
            "the calls' outcome",
            "document.getElementById('out').textContent",
        )
        .await;
    let allowed: Value = serde_json::from_str(
        &browser
            .text("document.getElementById('out').textContent")
            .await,
    )
    .unwrap();
    browser.shoot("cors-allowed").await;
    assert_eq!(allowed["http"], 200, "{allowed}");
    assert!(allowed["actions"].as_u64().unwrap() >= 19, "{allowed}");
    assert_eq!(allowed["sse"], true, "{allowed}");
    assert_eq!(allowed["grpc"], 200, "{allowed}");
    assert!(allowed["grpc_bytes"].as_u64().unwrap() > 100, "{allowed}");
    // A refusal's status and message are readable (exposed) from the page.
    assert_eq!(allowed["grpc_status"], "5", "{allowed}");
    assert_eq!(
        allowed["grpc_message"], "execution \"\" not found",
        "{allowed}"
    );

    browser.goto(&format!("http://{other}/")).await;
    browser
        .until(
            "the calls' outcome",
            "document.getElementById('out').textContent",
        )
        .await;
    let refused: Value = serde_json::from_str(
        &browser
            .text("document.getElementById('out').textContent")
            .await,
    )
    .unwrap();
    assert_eq!(
        refused,
        json!({"http": "refused", "sse": "refused", "grpc": "refused", "grpc_status": "refused"}),
        "another origin"
    );
}
