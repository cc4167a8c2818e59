//! `deploy/` renders with `kubectl kustomize`, is least-privilege, and the API server accepts it
//! in a server-side dry run that persists nothing.

mod common;

use std::{
    io::Write,
    path::Path,
    process::{Command, Output, Stdio},
};

use common::tool;
use executor_service::{
    policy::{Policy, PolicyConfig},
    sim::{Scenario, SimCluster, SimConfig},
};
use serde_yaml::Value;

fn kustomize() -> Vec<Value> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let out = Command::new(tool("kubectl"))
        .arg("kustomize")
        .arg(&dir)
        .output()
        .expect("run kubectl kustomize");
    assert!(
        out.status.success(),
        "kubectl kustomize deploy failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("UTF-8 manifests");
    text.split("\n---\n")
        .map(|doc| serde_yaml::from_str(doc).expect("a YAML document"))
        .collect()
}

fn kind(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or_default()
}

fn one<'a>(docs: &'a [Value], wanted: &str) -> &'a Value {
    docs.iter()
        .find(|d| kind(d) == wanted)
        .unwrap_or_else(|| panic!("no {wanted} in deploy/"))
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_sequence()
        .map(|s| s.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn to_yaml(docs: &[&Value]) -> String {
    docs.iter()
        .map(|d| serde_yaml::to_string(d).expect("YAML"))
        .collect::<Vec<_>>()
        .join("---\n")
}

fn kubectl_with_stdin(kubeconfig: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(tool("kubectl"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubectl");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write manifests");
    child.wait_with_output().expect("kubectl output")
}

fn kubectl(kubeconfig: &Path, args: &[&str]) -> Output {
    Command::new(tool("kubectl"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .expect("run kubectl")
}

const SERVER_DRY_RUN: &[&str] = &["apply", "--dry-run=server", "-f", "-"];

#[test]
fn the_cluster_role_grants_only_named_verbs_on_named_resources() {
    let docs = kustomize();
    let mut kinds: Vec<&str> = docs.iter().map(kind).collect();
    kinds.sort();
    kinds.dedup();
    assert_eq!(
        kinds,
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "CustomResourceDefinition",
            "Deployment",
            "Namespace",
            "NetworkPolicy",
            "PodDisruptionBudget",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount",
        ]
    );
    let named = |kind_: &str, name: &str| {
        docs.iter()
            .find(|d| kind(d) == kind_ && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind_} {name} in deploy/"))
    };
    // Every role, the service's and each action's: named verbs on named resources.
    let grants = |role: &Value| {
        let mut granted = Vec::new();
        for rule in role["rules"].as_sequence().expect("rules") {
            for field in ["apiGroups", "resources", "verbs"] {
                let values = strings(&rule[field]);
                assert!(!values.is_empty(), "a rule without {field}: {rule:?}");
                assert!(
                    values.iter().all(|v| !v.contains('*')),
                    "wildcard in {field}: {rule:?}"
                );
            }
            assert!(rule["nonResourceURLs"].is_null(), "{rule:?}");
            for resource in strings(&rule["resources"]) {
                for verb in strings(&rule["verbs"]) {
                    granted.push(format!("{verb} {resource}"));
                }
            }
        }
        granted
    };
    // The service's own role: its door and the debug-mode expiry, nothing of an action's.
    let role = named("ClusterRole", "executor-service");
    let service = grants(role);
    for needed in [
        "watch kubernetesexecutions",
        "patch kubernetesexecutions",
        "patch kubernetesexecutions/status",
        "list deployments",
    ] {
        assert!(service.iter().any(|g| g == needed), "missing: {needed}");
    }
    for never in [
        "get secrets",
        "patch deployments",
        "create deployments",
        "delete pods",
        "patch nodes",
        "impersonate serviceaccounts",
    ] {
        assert!(!service.iter().any(|g| g == never), "granted: {never}");
    }
    let binding = named("ClusterRoleBinding", "executor-service");
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    assert_eq!(binding["subjects"][0]["kind"], "ServiceAccount");
    assert_eq!(binding["subjects"][0]["namespace"], "executor-service");
    // It may impersonate the actions' accounts, and no one else.
    let impersonate = named("Role", "executor-service-impersonate-actions");
    assert_eq!(impersonate["metadata"]["namespace"], "executor-service");
    let rule = &impersonate["rules"][0];
    assert_eq!(strings(&rule["verbs"]), ["impersonate"]);
    assert_eq!(strings(&rule["resources"]), ["serviceaccounts"]);
    let accounts = strings(&rule["resourceNames"]);
    assert_eq!(accounts.len(), 43);
    assert!(accounts.iter().all(|a| a.starts_with("action-")));
    // Each action's role grants what its code calls; together, what the actions need.
    let action_roles: Vec<&Value> = docs
        .iter()
        .filter(|d| {
            kind(d) == "ClusterRole"
                && d["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("executor-service-action-"))
        })
        .collect();
    assert_eq!(action_roles.len(), 43);
    let all: Vec<String> = action_roles.iter().flat_map(|r| grants(r)).collect();
    for needed in [
        "delete pods",
        "create pods/eviction",
        "get pods/log",
        "patch deployments/scale",
        "patch deployments",
        "watch deployments",
        "list replicasets",
        "patch nodes",
        "patch persistentvolumeclaims",
        "get storageclasses",
        "patch horizontalpodautoscalers",
        "create networkpolicies",
        "patch networkpolicies",
        "create jobs",
        "list poddisruptionbudgets",
        "list events",
        "get services",
        "create volumesnapshots",
        "list pods",
        "delete jobs",
        "get configmaps",
    ] {
        assert!(all.iter().any(|g| g == needed), "missing: {needed}");
    }
    let scale = grants(named(
        "ClusterRole",
        "executor-service-action-scale-deployment",
    ));
    assert!(scale.iter().any(|g| g == "patch deployments/scale"));
    assert!(
        !scale
            .iter()
            .any(|g| g == "delete pods" || g == "patch nodes"),
        "{scale:?}"
    );
    // Secrets only for rotate_secrets, whose role no default binding grants anywhere.
    for role in &action_roles {
        let secrets = grants(role).iter().any(|g| g.ends_with(" secrets"));
        assert_eq!(
            secrets,
            role["metadata"]["name"] == "executor-service-action-rotate-secrets",
            "{role:?}"
        );
    }
    assert!(!docs.iter().any(|d| kind(d).ends_with("Binding")
        && d["roleRef"]["name"] == "executor-service-action-rotate-secrets"));
    // The code actions act only in the namespace of the code.
    let deploy_code = named("RoleBinding", "executor-service-action-deploy-code");
    assert_eq!(deploy_code["metadata"]["namespace"], "apis");
    let container = &one(&docs, "Deployment")["spec"]["template"]["spec"]["containers"][0];
    let env = container["env"].as_sequence().unwrap();
    let identities = env
        .iter()
        .find(|e| e["name"] == "EXECUTOR_ACTION_IDENTITIES")
        .expect("actions run as their own accounts");
    assert_eq!(identities["value"], "executor-service");

    let pod = &one(&docs, "Deployment")["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let container = &pod["containers"][0];
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    // Probes go to the plain health port: the API ports serve TLS and want tokens.
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/health");
    assert_eq!(container["readinessProbe"]["httpGet"]["port"], "health");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/livez");
    assert_eq!(container["livenessProbe"]["httpGet"]["port"], "health");
    let health_port = container["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "health")
        .expect("a health port");
    assert_eq!(health_port["containerPort"], 8086);
    // Safe by default: TLS, tokens and rules come from Secrets the pod cannot start without.
    let env = container["env"].as_sequence().unwrap();
    let env_of = |name: &str| {
        env.iter()
            .find(|e| e["name"] == name)
            .and_then(|e| e["value"].as_str())
            .unwrap_or_else(|| panic!("{name} is not set"))
            .to_string()
    };
    assert_eq!(env_of("EXECUTOR_HEALTH_LISTEN"), "0.0.0.0:8086");
    for (variable, volume) in [
        ("EXECUTOR_TLS_CERT", "tls"),
        ("EXECUTOR_TLS_KEY", "tls"),
        ("EXECUTOR_AUTH_TOKENS", "auth"),
        ("EXECUTOR_AUTHZ", "auth"),
    ] {
        let path = env_of(variable);
        let mount = container["volumeMounts"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|m| m["name"] == volume)
            .unwrap_or_else(|| panic!("no {volume} mount"));
        assert!(
            path.starts_with(mount["mountPath"].as_str().unwrap()),
            "{variable}={path} is not under the {volume} mount"
        );
        let source = pod["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|v| v["name"] == volume)
            .unwrap();
        assert!(source["secret"]["secretName"].is_string(), "{source:?}");
        assert!(
            source["secret"]["optional"].as_bool() != Some(true),
            "the {volume} Secret must be required"
        );
    }
    assert!(container["resources"]["limits"]["memory"].is_string());
    assert!(container["resources"]["requests"]["cpu"].is_string());
    let ports: Vec<i64> = one(&docs, "Service")["spec"]["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|p| p["port"].as_i64())
        .collect();
    assert_eq!(ports, [8084, 8085]);
}

#[test]
fn the_code_actions_role_is_namespaced_to_the_code_and_names_every_verb() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/rbac-code.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let docs: Vec<Value> = text
        .split("\n---\n")
        .map(|doc| serde_yaml::from_str(doc).expect("a YAML document"))
        .collect();
    let role = one(&docs, "Role");
    assert_eq!(
        role["metadata"]["namespace"], "apis",
        "only where the code lives"
    );
    assert!(docs
        .iter()
        .all(|d| kind(d) != "ClusterRole" && kind(d) != "ClusterRoleBinding"));
    let mut granted = Vec::new();
    for rule in role["rules"].as_sequence().expect("rules") {
        for resource in strings(&rule["resources"]) {
            assert!(!resource.contains('*'), "{rule:?}");
            for verb in strings(&rule["verbs"]) {
                assert!(!verb.contains('*'), "{rule:?}");
                granted.push(format!("{verb} {resource}"));
            }
        }
    }
    // What deploy_code, stop_code, remove_code, code_status and code_logs call.
    for needed in [
        "create deployments",
        "patch deployments",
        "delete deployments",
        "watch deployments",
        "patch configmaps",
        "delete configmaps",
        "patch services",
        "patch networkpolicies",
        "delete horizontalpodautoscalers",
        "list pods",
        "get pods/log",
    ] {
        assert!(granted.iter().any(|g| g == needed), "missing: {needed}");
    }
    for never in ["get secrets", "delete pods", "patch pods", "create pods"] {
        assert!(!granted.iter().any(|g| g == never), "granted: {never}");
    }
    let binding = one(&docs, "RoleBinding");
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    assert_eq!(binding["metadata"]["namespace"], "apis");
}

#[test]
fn the_policy_config_map_holds_a_policy_the_service_loads() {
    let docs = kustomize();
    let config_map = one(&docs, "ConfigMap");
    let rego = config_map["data"]["policy.rego"]
        .as_str()
        .expect("policy.rego in the ConfigMap");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.rego");
    std::fs::write(&path, rego).unwrap();
    if let Err(e) = Policy::from_file(&path, &PolicyConfig::default()) {
        panic!("deploy/policy.rego does not load: {e}");
    }
    // The Deployment mounts the generated (hash-suffixed) ConfigMap and points --policy at it.
    let pod = &one(&docs, "Deployment")["spec"]["template"]["spec"];
    let volume = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "policy")
        .expect("policy volume");
    assert_eq!(volume["configMap"]["name"], config_map["metadata"]["name"]);
    let env = pod["containers"][0]["env"].as_sequence().unwrap();
    assert!(env.iter().any(|e| e["name"] == "EXECUTOR_POLICY"
        && e["value"] == "/etc/executor-service/policy/policy.rego"));
}

#[test]
fn three_replicas_share_a_postgresql_store_from_a_secret_spread_over_nodes_one_down_at_a_time() {
    let docs = kustomize();
    let deployment = one(&docs, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 3);
    assert_eq!(deployment["spec"]["strategy"]["type"], "RollingUpdate");
    let pod = &deployment["spec"]["template"]["spec"];
    let env = pod["containers"][0]["env"].as_sequence().unwrap();
    let store = env
        .iter()
        .find(|e| e["name"] == "EXECUTOR_STORE")
        .expect("EXECUTOR_STORE");
    // A URL holds the password: from a Secret, never inline.
    assert!(store["value"].is_null(), "{store:?}");
    assert_eq!(
        store["valueFrom"]["secretKeyRef"]["name"],
        "executor-service-store"
    );
    let spread = pod["topologySpreadConstraints"]
        .as_sequence()
        .expect("topologySpreadConstraints");
    assert!(spread
        .iter()
        .any(|c| c["topologyKey"] == "kubernetes.io/hostname"
            && c["whenUnsatisfiable"] == "DoNotSchedule"));
    let budget = one(&docs, "PodDisruptionBudget");
    assert_eq!(budget["spec"]["maxUnavailable"], 1);
    // The pods may reach PostgreSQL.
    let policy = one(&docs, "NetworkPolicy");
    let egress_ports: Vec<&Value> = policy["spec"]["egress"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|rule| rule["ports"].as_sequence().into_iter().flatten())
        .map(|port| &port["port"])
        .collect();
    assert!(egress_ports.iter().any(|p| **p == 5432), "{egress_ports:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manifests_pass_a_server_side_dry_run_that_persists_nothing() {
    let docs = kustomize();
    let sim = SimCluster::start(SimConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        scenario: Scenario::demo(),
        speed: common::TEST_SPEED,
    })
    .await
    .expect("start simulated cluster");
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("sim.kubeconfig");
    sim.write_kubeconfig(&kubeconfig).unwrap();
    let kubeconfig = kubeconfig.as_path();

    let namespace = one(&docs, "Namespace");
    let out = tokio::task::block_in_place(|| {
        kubectl_with_stdin(kubeconfig, SERVER_DRY_RUN, &to_yaml(&[namespace]))
    });
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let gone = tokio::task::block_in_place(|| {
        kubectl(kubeconfig, &["get", "namespace", "executor-service"])
    });
    assert!(!gone.status.success(), "the dry run created the namespace");

    // As on a real cluster, a dry run cannot create objects in a namespace that does not exist
    // yet: the namespace is created for real, then everything else is dry-run into it.
    let out = tokio::task::block_in_place(|| {
        kubectl_with_stdin(kubeconfig, &["apply", "-f", "-"], &to_yaml(&[namespace]))
    });
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (rbac, namespaced): (Vec<&Value>, Vec<&Value>) = docs
        .iter()
        .filter(|d| kind(d) != "Namespace")
        .partition(|d| {
            d["apiVersion"]
                .as_str()
                .unwrap_or_default()
                .starts_with("rbac.authorization.k8s.io/")
        });
    let out = tokio::task::block_in_place(|| {
        kubectl_with_stdin(kubeconfig, SERVER_DRY_RUN, &to_yaml(&namespaced))
    });
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.ends_with("(server dry run)"))
            .count(),
        namespaced.len(),
        "{stdout}"
    );
    let left = tokio::task::block_in_place(|| {
        kubectl(
            kubeconfig,
            &[
                "get",
                "deployments,services,configmaps,serviceaccounts,poddisruptionbudgets,networkpolicies",
                "-n",
                "executor-service",
                "-o",
                "name",
            ],
        )
    });
    assert!(
        left.status.success(),
        "{}",
        String::from_utf8_lossy(&left.stderr)
    );
    // Only what the namespace controller makes of every new namespace.
    let persisted: Vec<String> = String::from_utf8_lossy(&left.stdout)
        .lines()
        .filter(|l| *l != "serviceaccount/default")
        .map(str::to_string)
        .collect();
    assert!(persisted.is_empty(), "the dry run persisted {persisted:?}");

    // The roles and bindings, dry-run too: the API server accepts them and keeps none.
    let out = tokio::task::block_in_place(|| {
        kubectl_with_stdin(
            kubeconfig,
            &["apply", "--dry-run=server", "--validate=false", "-f", "-"],
            &to_yaml(&rbac),
        )
    });
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (kind_, name) in [
        ("clusterrole", "executor-service"),
        ("clusterrole", "executor-service-action-scale-deployment"),
        (
            "customresourcedefinition",
            "kubernetesexecutions.executor-service.io",
        ),
    ] {
        let left = tokio::task::block_in_place(|| kubectl(kubeconfig, &["get", kind_, name]));
        assert!(!left.status.success(), "the dry run created {kind_} {name}");
    }
    sim.shutdown().await;
}
