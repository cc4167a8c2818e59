//! What operators install, checked without a cluster or an image builder:
//! - the Prometheus alert rules load (`promtool check rules`) and fire on the histories of
//!   `deploy/prometheus/alerts.test.yaml` (`promtool test rules`), one of which fires each alert;
//! - every query of the Grafana dashboard and of the alert rules names a metric that `/metrics`
//!   really serves, with labels it really has (a counter `c` is selected as `c_total`, a
//!   histogram `h` as `h_bucket`, `h_sum`, `h_count`);
//! - the binary runs the way the Deployment runs it: as uid/gid 65532 with no supplementary
//!   groups, in a read-only working directory, writing only to the directory it was given (the
//!   Deployment's emptyDir), since no image can be built on these machines.
//!
//! The rules need Debian's `prometheus` package (it ships `promtool`), the last test `setpriv`
//! (util-linux) and root; `.ci/run` installs the first, CI runs as root. A missing tool fails
//! the test: it never turns into a silent pass.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{BufRead, BufReader},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::{plain_http, ServeProcess};
use executor_service::api::proto::ExecutionState;
use serde_json::{json, Value};

/// The unprivileged user of the image (distroless `nonroot`) and of the Deployment's
/// `runAsUser`/`runAsGroup`.
const NONROOT: u32 = 65532;

/// How long a started server may take to answer its probes: the embedded cluster starts first.
const START_TIMEOUT: Duration = Duration::from_secs(20);

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

/// `promtool` from `PATH`; fails the test, saying how to get it, when it is missing.
fn promtool() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("promtool"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "promtool is not on PATH: run .ci/run, or install Debian's `prometheus` package \
                 (apt-get install prometheus), which ships it"
            )
        })
}

fn promtool_in_deploy_prometheus(args: &[&str]) -> String {
    let out = Command::new(promtool())
        .args(args)
        .current_dir(deploy().join("prometheus"))
        .output()
        .expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

fn alert_rules() -> serde_yaml::Value {
    let text = std::fs::read_to_string(deploy().join("prometheus/alerts.yaml")).expect("alerts");
    serde_yaml::from_str(&text).expect("alerts.yaml is YAML")
}

fn alert_names(rules: &serde_yaml::Value) -> BTreeSet<String> {
    rules["groups"]
        .as_sequence()
        .expect("alerts.yaml: groups")
        .iter()
        .flat_map(|group| group["rules"].as_sequence().expect("a group's rules"))
        .filter_map(|rule| rule["alert"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn alert_rules_pass_promtool_and_its_tests_fire_every_alert() {
    let checked = promtool_in_deploy_prometheus(&["check", "rules", "alerts.yaml"]);
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tested = promtool_in_deploy_prometheus(&["test", "rules", "alerts.test.yaml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");

    // An alert added without a history that fires it would pass promtool unnoticed.
    let text = std::fs::read_to_string(deploy().join("prometheus/alerts.test.yaml")).unwrap();
    let tests: serde_yaml::Value = serde_yaml::from_str(&text).expect("alerts.test.yaml is YAML");
    let fired: BTreeSet<String> = tests["tests"]
        .as_sequence()
        .expect("alerts.test.yaml: tests")
        .iter()
        .flat_map(|test| {
            test["alert_rule_test"]
                .as_sequence()
                .cloned()
                .unwrap_or_default()
        })
        .filter(|case| {
            case["exp_alerts"]
                .as_sequence()
                .is_some_and(|a| !a.is_empty())
        })
        .filter_map(|case| case["alertname"].as_str().map(str::to_string))
        .collect();
    let names = alert_names(&alert_rules());
    assert!(names.len() >= 4, "too few alerts: {names:?}");
    let never_fired: Vec<_> = names.difference(&fired).collect();
    assert!(
        never_fired.is_empty(),
        "alerts.test.yaml fires no {never_fired:?}"
    );
}

/// A metric named in a query or an exposition line, with the matchers written after it.
#[derive(Debug)]
struct Selector {
    name: String,
    /// `(label, value)` of each `label="value"` (or `=~`, `!=`, `!~`) in its braces.
    matchers: Vec<(String, String)>,
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Reads a quoted string at the start of `chars` (`"…"` or `'…'` with escapes, `` `…` `` raw);
/// returns its content.
fn string_literal(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> String {
    let quote = chars.next().unwrap_or_default();
    let mut value = String::new();
    while let Some(c) = chars.next() {
        match c {
            '\\' if quote != '`' => value.extend(chars.next()),
            c if c == quote => break,
            c => value.push(c),
        }
    }
    value
}

fn skip_spaces(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    while chars.next_if(|c| c.is_whitespace()).is_some() {}
}

/// The `executor_*` metrics a PromQL expression (or a line of the Prometheus text format)
/// names, each with its label matchers. Strings and comments are skipped, so a metric name in a
/// label value is not taken for a selector.
fn selectors(text: &str) -> Vec<Selector> {
    let mut found = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c == '"' || c == '\'' || c == '`' {
            string_literal(&mut chars);
        } else if c == '#' {
            while chars.next_if(|&c| c != '\n').is_some() {}
        } else if is_name_char(c) {
            let mut word = String::new();
            while let Some(c) = chars.next_if(|&c| is_name_char(c)) {
                word.push(c);
            }
            if !word.starts_with("executor_") {
                continue;
            }
            skip_spaces(&mut chars);
            let mut matchers = Vec::new();
            if chars.next_if_eq(&'{').is_some() {
                loop {
                    skip_spaces(&mut chars);
                    match chars.peek().copied() {
                        None => break,
                        Some('}') => {
                            chars.next();
                            break;
                        }
                        Some(',') => {
                            chars.next();
                            continue;
                        }
                        Some(_) => {}
                    }
                    let mut label = String::new();
                    while let Some(c) = chars.next_if(|&c| is_name_char(c)) {
                        label.push(c);
                    }
                    skip_spaces(&mut chars);
                    while chars.next_if(|&c| matches!(c, '=' | '!' | '~')).is_some() {}
                    skip_spaces(&mut chars);
                    let value = string_literal(&mut chars);
                    assert!(!label.is_empty(), "cannot read the matchers in {text:?}");
                    matchers.push((label, value));
                }
            }
            found.push(Selector {
                name: word,
                matchers,
            });
        } else {
            chars.next();
        }
    }
    found
}

/// What a scrape of `/metrics` lets a query select: each sample name with the label names seen
/// on it. Sample names carry the suffixes PromQL sees (`_total`, `_bucket`, `_sum`, `_count`).
struct Exported {
    samples: BTreeMap<String, BTreeSet<String>>,
}

impl Exported {
    fn parse(exposition: &str) -> Exported {
        let mut samples: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for line in exposition.lines().filter(|l| !l.starts_with('#')) {
            for selector in selectors(line) {
                samples
                    .entry(selector.name)
                    .or_default()
                    .extend(selector.matchers.into_iter().map(|(label, _)| label));
            }
        }
        Exported { samples }
    }

    /// Panics naming `query` (from `origin`) when it selects a metric the service does not
    /// serve, a label that metric does not have, or a state or code that cannot occur.
    fn check(&self, origin: &str, query: &str) {
        let named = selectors(query);
        assert!(
            !named.is_empty(),
            "{origin}: `{query}` names no executor_ metric"
        );
        for selector in named {
            let labels = self.samples.get(&selector.name).unwrap_or_else(|| {
                panic!(
                    "{origin}: `{query}` selects {}, which /metrics does not serve; it serves {:?}",
                    selector.name,
                    self.samples.keys().collect::<Vec<_>>()
                )
            });
            for (label, value) in &selector.matchers {
                assert!(
                    labels.contains(label),
                    "{origin}: `{query}` matches label {label} of {}, which has only {labels:?}",
                    selector.name
                );
                check_label_value(origin, query, label, value);
            }
        }
    }
}

/// A matcher on `state` must name execution states, one on `code` an HTTP status or
/// `transport`: a misspelt value selects nothing and the panel or alert stays silent.
fn check_label_value(origin: &str, query: &str, label: &str, value: &str) {
    for alternative in value.split('|') {
        let known = match label {
            "state" => {
                ExecutionState::from_str_name(&format!("EXECUTION_STATE_{alternative}")).is_some()
            }
            "code" => alternative == "transport" || alternative.parse::<u16>().is_ok(),
            _ => true,
        };
        assert!(
            known,
            "{origin}: `{query}` matches {label}={alternative:?}, a value the service never sets"
        );
    }
}

async fn metrics_text(base: &str) -> String {
    let response = plain_http()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(response.status(), 200);
    response.text().await.expect("the exposition")
}

/// Every panel with queries, the panels of collapsed rows included; rows themselves only lay
/// the others out.
fn query_panels(panels: &[Value]) -> Vec<&Value> {
    let mut out = Vec::new();
    for panel in panels {
        if panel["type"] == "row" {
            if let Some(children) = panel["panels"].as_array() {
                out.extend(query_panels(children));
            }
        } else {
            out.push(panel);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_and_alert_query_names_metrics_and_labels_that_metrics_serves() {
    let server = ServeProcess::start(&[]);
    let base = format!("http://{}", server.http_addr);
    let http = plain_http();
    // A metric family with labels is served only once it has a sample: an execution gives the
    // executions and durations, a missing deployment a Kubernetes API error (404), a SIGHUP a
    // configuration reload.
    let scale = |name: &str, replicas: u32| {
        json!({
            "action": "scale_deployment",
            "target": {"namespace": "production", "kind": "Deployment", "name": name},
            "parameters": {"replicas": replicas},
            "wait": true,
        })
    };
    let done: Value = http
        .post(format!("{base}/api/v1/execute"))
        .json(&scale("web", 4))
        .send()
        .await
        .expect("POST /api/v1/execute")
        .json()
        .await
        .expect("a JSON answer");
    assert_eq!(done["execution"]["state"], "SUCCEEDED", "{done}");
    let missing = http
        .post(format!("{base}/api/v1/execute"))
        .json(&scale("nope", 1))
        .send()
        .await
        .expect("POST /api/v1/execute");
    let status = missing.status();
    let refusal = missing.text().await.unwrap_or_default();
    assert_eq!(status, 404, "{refusal}");
    let hangup = Command::new("kill")
        .arg("-HUP")
        .arg(server.child.id().to_string())
        .status()
        .expect("run kill");
    assert!(hangup.success(), "kill -HUP {}", server.child.id());
    let deadline = Instant::now() + START_TIMEOUT;
    let exposition = loop {
        let text = metrics_text(&base).await;
        if text.contains("executor_config_reloads_total") {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "no reload counted after SIGHUP:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let exported = Exported::parse(&exposition);

    let text = std::fs::read_to_string(deploy().join("grafana/executor-service.json"))
        .expect("the dashboard");
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    for key in ["title", "uid"] {
        assert!(
            dashboard[key].as_str().is_some_and(|s| !s.is_empty()),
            "dashboard {key}"
        );
    }
    assert!(
        dashboard["schemaVersion"].is_u64(),
        "dashboard schemaVersion"
    );
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("templating");
    assert!(
        variables.iter().any(|v| v["name"] == "datasource"
            && v["type"] == "datasource"
            && v["query"] == "prometheus"),
        "no Prometheus `datasource` variable: {variables:?}"
    );
    let panels = query_panels(dashboard["panels"].as_array().expect("panels"));
    assert!(!panels.is_empty(), "a dashboard without panels");
    for panel in panels {
        let title = panel["title"].as_str().expect("a panel title");
        for key in ["h", "w", "x", "y"] {
            assert!(panel["gridPos"][key].is_u64(), "{title}: gridPos.{key}");
        }
        let targets = panel["targets"].as_array().expect("panel targets");
        assert!(!targets.is_empty(), "{title}: no targets");
        for target in targets {
            assert!(
                target["refId"].is_string(),
                "{title}: a target without refId"
            );
            let expr = target["expr"].as_str().expect("a target's expr");
            exported.check(&format!("dashboard panel {title:?}"), expr);
        }
    }

    let rules = alert_rules();
    for group in rules["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let name = rule["alert"].as_str().expect("an alert rule");
            assert!(rule["labels"]["severity"].is_string(), "{name}: severity");
            for key in ["summary", "description"] {
                assert!(rule["annotations"][key].is_string(), "{name}: {key}");
            }
            let expr = rule["expr"].as_str().expect("an alert's expr");
            exported.check(&format!("alert {name}"), expr);
        }
    }
}

/// The effective uid of this process.
fn effective_uid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    uid_of(&status)
}

/// The effective uid in a `/proc/PID/status`.
fn uid_of(status: &str) -> u32 {
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|uid| uid.parse().ok())
        .expect("a Uid line")
}

/// Whether a user with no rights on the path but "others" can execute it.
fn others_can_run(path: &Path) -> bool {
    let mode = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.permissions().mode());
    mode(path) & 0o005 == 0o005 && path.ancestors().skip(1).all(|dir| mode(dir) & 0o001 != 0)
}

/// A process killed on drop, so a failed assertion leaves no server behind.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_as_uid_65532_in_a_read_only_working_directory_writing_only_its_data_dir() {
    assert_eq!(
        effective_uid(),
        0,
        "this test switches to uid {NONROOT} with setpriv, which needs root: run it as root \
         (CI does)"
    );
    match Command::new("setpriv").arg("--version").output() {
        Ok(out) => assert!(out.status.success(), "setpriv --version failed"),
        Err(e) => panic!("setpriv not found ({e}): install util-linux (Debian's `util-linux`)"),
    }
    let dir = tempfile::tempdir().unwrap();
    let set_mode = |path: &Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    set_mode(dir.path(), 0o755);
    // The container's read-only root: the working directory belongs to root, mode 0555.
    let workdir = dir.path().join("workdir");
    std::fs::create_dir(&workdir).unwrap();
    set_mode(&workdir, 0o555);
    // The Deployment's emptyDir: the only place the user may write.
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::os::unix::fs::chown(&data, Some(NONROOT), Some(NONROOT)).unwrap();
    set_mode(&data, 0o700);
    let built = PathBuf::from(env!("CARGO_BIN_EXE_executor-service"));
    let binary = if others_can_run(&built) {
        built
    } else {
        // The target directory may sit under a directory only root may enter.
        let copy = dir.path().join("executor-service");
        std::fs::copy(built, &copy).expect("copy the binary");
        set_mode(&copy, 0o755);
        copy
    };
    let log_path = dir.path().join("serve.log");
    let log_file = std::fs::File::create(&log_path).unwrap();
    let child = Command::new("setpriv")
        .arg(format!("--reuid={NONROOT}"))
        .arg(format!("--regid={NONROOT}"))
        .arg("--clear-groups")
        .arg(binary)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .args(["--health-listen", "127.0.0.1:0", "--sim-speed", "20"])
        .arg("--store")
        .arg(data.join("history.db"))
        .arg("--sim-kubeconfig-out")
        .arg(data.join("sim.kubeconfig"))
        .args(["--cooldown", "0s"])
        .current_dir(&workdir)
        .env("HOME", &data)
        .env("TMPDIR", &data)
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdout(Stdio::piped())
        .stderr(log_file)
        .spawn()
        .expect("spawn setpriv … executor-service serve");
    let mut server = Killed(child);
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let mut stdout = BufReader::new(server.0.stdout.take().unwrap());
    let mut listen_line = |prefix: &str| {
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read a listen line");
        line.trim()
            .strip_prefix(prefix)
            .unwrap_or_else(|| panic!("expected {prefix:?}, read {line:?}; its log:\n{}", log()))
            .to_string()
    };
    let grpc = listen_line("executor-service listening on ");
    let http = listen_line("executor-service http listening on ");
    let health = listen_line("executor-service health listening on ");

    // setpriv has exec'd the server by now: same pid, the user and groups of the pod.
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.0.id())).unwrap();
    assert_eq!(uid_of(&status), NONROOT, "{status}");
    let groups = status.lines().find_map(|l| l.strip_prefix("Groups:"));
    assert_eq!(groups.map(str::trim), Some(""), "supplementary groups left");

    // The kubelet's probes, on the health port as in the Deployment.
    let client = plain_http();
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let answer = client.get(format!("http://{health}/health")).send().await;
        if answer.as_ref().is_ok_and(|a| a.status() == 200) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/health never answered 200 ({answer:?}); the log:\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::net::TcpStream::connect(grpc.as_str())
        .await
        .expect("the gRPC port listens");
    let livez = client
        .get(format!("http://{health}/livez"))
        .send()
        .await
        .expect("GET /livez");
    assert_eq!(livez.status(), 200);

    // A real write: an execution goes to the history in the data directory.
    let done: Value = client
        .post(format!("http://{http}/api/v1/execute"))
        .json(&json!({
            "action": "scale_deployment",
            "target": {"namespace": "production", "kind": "Deployment", "name": "web"},
            "parameters": {"replicas": 4},
            "wait": true,
        }))
        .send()
        .await
        .expect("POST /api/v1/execute")
        .json()
        .await
        .expect("a JSON answer");
    assert_eq!(done["execution"]["state"], "SUCCEEDED", "{done}");
    assert!(data.join("history.db").exists(), "no history in {data:?}");

    let written: Vec<_> = std::fs::read_dir(&workdir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert!(
        written.is_empty(),
        "serve wrote {written:?} into its working directory {workdir:?}"
    );
    assert!(
        server.0.try_wait().unwrap().is_none(),
        "serve exited; its log:\n{}",
        log()
    );
}
