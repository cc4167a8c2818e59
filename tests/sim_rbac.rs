//! RBAC, ServiceAccount tokens and impersonation on the simulated cluster, driven by real
//! kubectl (1.37) and kube-rs: Roles and bindings decide what a ServiceAccount may do, with
//! the API server's 403 messages; `kubectl auth can-i` answers from them; tokens from
//! `kubectl create token` authenticate; impersonation needs the `impersonate` verb.

mod common;

use std::path::PathBuf;
use std::process::Output;

use executor_service::sim::{
    mk_deployment, mk_namespace, mk_service_account, Scenario, SimCluster, SimConfig,
};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

const SA: &str = "system:serviceaccount:executor:action-scale";

const RBAC: &str = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: scaler, namespace: default}
rules:
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch]
- apiGroups: [apps]
  resources: [deployments/scale]
  verbs: [get, patch, update]
  resourceNames: [web]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: scaler, namespace: default}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: scaler}
subjects:
- {kind: ServiceAccount, name: action-scale, namespace: executor}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: pod-reader}
rules:
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: executor-pod-readers}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: pod-reader}
subjects:
- {kind: Group, name: "system:serviceaccounts:executor", apiGroup: rbac.authorization.k8s.io}
"#;

const IMPERSONATOR: &str = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: impersonator}
rules:
- apiGroups: [""]
  resources: [users, groups]
  verbs: [impersonate]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: action-scale-impersonates}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: impersonator}
subjects:
- {kind: ServiceAccount, name: action-scale, namespace: executor}
"#;

struct Env {
    cluster: SimCluster,
    kubeconfig: PathBuf,
    dir: tempfile::TempDir,
}

impl Env {
    async fn start() -> Env {
        let scenario = Scenario::empty()
            .with(mk_namespace("executor"))
            .with(mk_service_account("executor", "action-scale"))
            .with(mk_deployment("default", "web", 1, "nginx:1.25"))
            .with(mk_deployment("default", "api", 1, "nginx:1.25"));
        let cluster = SimCluster::start(SimConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            scenario,
            speed: 20.0,
        })
        .await
        .expect("start sim");
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        cluster.write_kubeconfig(&kubeconfig).unwrap();
        let env = Env {
            cluster,
            kubeconfig,
            dir,
        };
        let rbac = env.file("rbac.yaml", RBAC);
        env.ok(&["apply", "-f", &rbac]).await;
        env
    }

    /// Serves the cluster over TLS with a fresh self-signed certificate for 127.0.0.1:
    /// the `https://` URL and the certificate (PEM) to trust.
    async fn serve_tls(&mut self) -> (String, String) {
        let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
        let (cert, key) = (ck.cert.pem(), ck.signing_key.serialize_pem());
        let cert_path = self.dir.path().join("tls.crt");
        let key_path = self.dir.path().join("tls.key");
        std::fs::write(&cert_path, &cert).unwrap();
        std::fs::write(&key_path, &key).unwrap();
        let url = self.cluster.serve_tls(&cert_path, &key_path).await.unwrap();
        (url, cert)
    }

    fn file(&self, name: &str, text: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().into_owned()
    }

    async fn kubectl_with(&self, kubeconfig: &std::path::Path, args: &[&str]) -> Output {
        let out = tokio::process::Command::new(common::tool("kubectl"))
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.path().join("cache"))
            .args(args)
            .output()
            .await
            .expect("run kubectl");
        eprintln!(
            "$ kubectl {}\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    async fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_with(&self.kubeconfig, args).await
    }

    async fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args).await;
        assert!(
            out.status.success(),
            "kubectl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `kubectl auth can-i ...`: its printed answer.
    async fn can_i(&self, args: &[&str]) -> String {
        let mut a = vec!["auth", "can-i"];
        a.extend(args);
        let out = self.kubectl(&a).await;
        let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert_eq!(out.status.success(), said == "yes", "exit code vs {said}");
        said
    }
}

#[tokio::test]
async fn kubectl_auth_can_i_answers_from_roles_and_bindings() {
    let env = Env::start().await;
    let as_sa = format!("--as={SA}");
    let yes = |s: String| assert_eq!(s, "yes");
    let no = |s: String| assert!(s.starts_with("no"), "{s}");
    yes(env
        .can_i(&[
            "patch",
            "deployments/web",
            "--subresource=scale",
            "-n",
            "default",
            &as_sa,
        ])
        .await);
    no(env
        .can_i(&[
            "patch",
            "deployments/api",
            "--subresource=scale",
            "-n",
            "default",
            &as_sa,
        ])
        .await);
    yes(env
        .can_i(&["list", "deployments", "-n", "default", &as_sa])
        .await);
    no(env
        .can_i(&["delete", "deployments", "-n", "default", &as_sa])
        .await);
    no(env
        .can_i(&["list", "deployments", "-n", "executor", &as_sa])
        .await);
    yes(env.can_i(&["list", "pods", "-A", &as_sa]).await);
    no(env
        .can_i(&["list", "secrets", "-n", "default", &as_sa])
        .await);
    yes(env.can_i(&["delete", "nodes"]).await);
    let tables = env.ok(&["get", "rolebindings", "-n", "default"]).await;
    assert!(tables.contains("Role/scaler"), "{tables}");
    let tables = env.ok(&["get", "clusterroles"]).await;
    assert!(
        tables.contains("cluster-admin") && tables.contains("CREATED AT"),
        "{tables}"
    );

    // A SubjectAccessReview for another user, and a binding to a missing role as reason.
    let sar = env.file(
        "sar.yaml",
        &format!(
            "apiVersion: authorization.k8s.io/v1\nkind: SubjectAccessReview\nspec:\n  user: {SA}\n  groups: [system:serviceaccounts, system:serviceaccounts:executor]\n  resourceAttributes: {{namespace: default, verb: get, group: apps, resource: deployments, name: web}}\n"
        ),
    );
    let answer: serde_json::Value =
        serde_json::from_str(&env.ok(&["create", "-f", &sar, "-o", "json"]).await).unwrap();
    assert_eq!(answer["status"]["allowed"], true, "{answer}");
    assert_eq!(
        answer["status"]["reason"],
        "RBAC: allowed by RoleBinding \"scaler/default\" of Role \"scaler\" to ServiceAccount \"action-scale/executor\""
    );
}

#[tokio::test]
async fn a_role_allows_one_scale_and_refuses_another_with_the_api_servers_message() {
    let env = Env::start().await;
    let as_sa = format!("--as={SA}");
    env.ok(&[
        &as_sa,
        "scale",
        "deploy/web",
        "--replicas=3",
        "-n",
        "default",
    ])
    .await;
    let client = env.cluster.client().await.unwrap();
    let deployments: Api<Deployment> = Api::namespaced(client, "default");
    let web = deployments.get("web").await.unwrap();
    assert_eq!(web.spec.unwrap().replicas, Some(3));
    let writes = env
        .cluster
        .writes()
        .on("deployments/scale", "default", "web");
    let last = writes.last().expect("the scale is recorded");
    assert!(last.applied());
    assert_eq!(last.user, SA);
    assert_eq!(last.to_json()["user"], SA);

    let out = env
        .kubectl(&[
            &as_sa,
            "scale",
            "deploy/api",
            "--replicas=2",
            "-n",
            "default",
        ])
        .await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("Error from server (Forbidden): deployments.apps \"api\" is forbidden: User \"{SA}\" cannot patch resource \"deployments/scale\" in API group \"apps\" in the namespace \"default\"")),
        "{err}"
    );
    let out = env
        .kubectl(&[&as_sa, "get", "secrets", "-n", "default"])
        .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("secrets is forbidden: User \"{SA}\" cannot list resource \"secrets\" in API group \"\" in the namespace \"default\"")),
        "{err}"
    );
    let out = env.kubectl(&[&as_sa, "get", "nodes"]).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("nodes is forbidden: User \"{SA}\" cannot list resource \"nodes\" in API group \"\" at the cluster scope")),
        "{err}"
    );
}

#[tokio::test]
async fn a_token_from_kubectl_create_token_is_limited_by_rbac_and_impersonation_needs_its_verb() {
    let mut env = Env::start().await;
    let token = env
        .ok(&["create", "token", "action-scale", "-n", "executor"])
        .await
        .trim()
        .to_string();
    assert!(!token.is_empty());
    // kubectl sends bearer tokens only over TLS: serve the cluster over TLS too.
    let (https, ca) = env.serve_tls().await;
    let tok = env.dir.path().join("token.kubeconfig");
    env.cluster
        .write_kubeconfig_tls(&tok, &https, &ca, Some(&token))
        .unwrap();
    let ok = |out: Output| {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let err = |out: Output| {
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let listed = ok(env
        .kubectl_with(&tok, &["get", "deploy", "-n", "default"])
        .await);
    assert!(listed.contains("web") && listed.contains("api"), "{listed}");
    let who = ok(env
        .kubectl_with(&tok, &["auth", "whoami", "-o", "json"])
        .await);
    assert!(who.contains(SA), "{who}");
    let e = err(env
        .kubectl_with(&tok, &["delete", "deploy", "web", "-n", "default"])
        .await);
    assert!(
        e.contains(&format!("deployments.apps \"web\" is forbidden: User \"{SA}\" cannot delete resource \"deployments\" in API group \"apps\" in the namespace \"default\"")),
        "{e}"
    );

    // Impersonation without the verb is refused, naming what was impersonated.
    let e = err(env.kubectl_with(&tok, &["--as=alice", "get", "pods"]).await);
    assert!(
        e.contains(&format!("users \"alice\" is forbidden: User \"{SA}\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope")),
        "{e}"
    );
    let e = err(env
        .kubectl_with(&tok, &["--as=system:serviceaccount:ns:x", "get", "pods"])
        .await);
    assert!(
        e.contains(&format!("serviceaccounts \"x\" is forbidden: User \"{SA}\" cannot impersonate resource \"serviceaccounts\" in API group \"\" in the namespace \"ns\"")),
        "{e}"
    );
    let imp = env.file("imp.yaml", IMPERSONATOR);
    env.ok(&["apply", "-f", &imp]).await;
    // Now alice is impersonated, and alice herself may not list pods.
    let e = err(env.kubectl_with(&tok, &["--as=alice", "get", "pods"]).await);
    assert!(
        e.contains("pods is forbidden: User \"alice\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""),
        "{e}"
    );
    ok(env
        .kubectl_with(
            &tok,
            &[
                "--as=alice",
                "--as-group=system:serviceaccounts:executor",
                "get",
                "pods",
            ],
        )
        .await);

    // A token the cluster never issued: 401.
    let bogus = env.dir.path().join("bogus.kubeconfig");
    env.cluster
        .write_kubeconfig_tls(&bogus, &https, &ca, Some("not-a-token"))
        .unwrap();
    let e = err(env.kubectl_with(&bogus, &["get", "pods"]).await);
    assert!(
        e.contains("You must be logged in to the server") || e.contains("Unauthorized"),
        "{e}"
    );
    // Deleting the ServiceAccount invalidates its tokens.
    env.ok(&["delete", "sa", "action-scale", "-n", "executor"])
        .await;
    let e = err(env
        .kubectl_with(&tok, &["get", "deploy", "-n", "default"])
        .await);
    assert!(e.contains("Unauthorized") || e.contains("logged in"), "{e}");
}

#[tokio::test]
async fn kube_rs_impersonating_a_service_account_gets_the_same_403() {
    let env = Env::start().await;
    let mut config = kube::Config::new(env.cluster.url().parse().unwrap());
    config.default_namespace = "default".into();
    config.auth_info.impersonate = Some(SA.to_string());
    let client = kube::Client::try_from(config).unwrap();
    let deployments: Api<Deployment> = Api::namespaced(client, "default");
    let patch = Patch::Merge(json!({"spec": {"replicas": 2}}));
    let scaled = deployments
        .patch_scale("web", &PatchParams::default(), &patch)
        .await
        .unwrap();
    assert_eq!(scaled.spec.unwrap().replicas, Some(2));
    match deployments
        .patch_scale("api", &PatchParams::default(), &patch)
        .await
        .unwrap_err()
    {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 403);
            assert_eq!(s.reason, "Forbidden");
            assert_eq!(
                s.message,
                format!("deployments.apps \"api\" is forbidden: User \"{SA}\" cannot patch resource \"deployments/scale\" in API group \"apps\" in the namespace \"default\"")
            );
        }
        other => panic!("{other}"),
    }
    let token = env
        .cluster
        .issue_token(
            "executor",
            "action-scale",
            std::time::Duration::from_secs(600),
        )
        .unwrap();
    let config = kube::Config::from_custom_kubeconfig(
        env.cluster.kubeconfig_with_token(&token),
        &Default::default(),
    )
    .await
    .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let deployments: Api<Deployment> = Api::namespaced(client, "default");
    assert_eq!(
        deployments
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .len(),
        2
    );
    assert!(deployments
        .delete("web", &Default::default())
        .await
        .is_err());
}
