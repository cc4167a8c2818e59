//! CustomResourceDefinitions on the simulated cluster, driven by real kubectl (1.37) and
//! kube-rs: a CRD installed at run time serves its objects (every verb, `/status`, schema
//! pruning and validation, printer columns, finalizers, garbage collection) in that cluster
//! only, and deleting it deletes them.

mod common;

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use executor_service::sim::{Scenario, SimCluster, SimConfig};
use futures::{StreamExt, TryStreamExt};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams,
    PostParams, WatchEvent, WatchParams,
};
use serde_json::{json, Value};

const SPEED: f64 = 20.0;

const CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names:
    plural: widgets
    singular: widget
    kind: Widget
    shortNames: [wd]
  versions:
  - name: v1
    served: true
    storage: true
    subresources:
      status: {}
    additionalPrinterColumns:
    - name: Replicas
      type: integer
      jsonPath: .spec.replicas
    - name: Size
      type: string
      jsonPath: .spec.size
    - name: Ready
      type: boolean
      jsonPath: .status.ready
    - name: Age
      type: date
      jsonPath: .metadata.creationTimestamp
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [size]
            properties:
              replicas: {type: integer}
              size: {type: string, enum: [small, large]}
              tags: {type: array, items: {type: string}}
              extra: {type: object, x-kubernetes-preserve-unknown-fields: true}
          status:
            type: object
            properties:
              ready: {type: boolean}
  - name: v1beta1
    served: true
    storage: false
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
"#;

const WIDGET: &str = r#"
apiVersion: example.com/v1
kind: Widget
metadata:
  name: w1
  namespace: default
spec:
  replicas: 2
  size: small
"#;

struct Env {
    cluster: SimCluster,
    kubeconfig: PathBuf,
    dir: tempfile::TempDir,
}

impl Env {
    async fn start() -> Env {
        let cluster = SimCluster::start(SimConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            scenario: Scenario::by_name("empty").unwrap(),
            speed: SPEED,
        })
        .await
        .expect("start sim");
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        cluster.write_kubeconfig(&kubeconfig).unwrap();
        Env {
            cluster,
            kubeconfig,
            dir,
        }
    }

    fn file(&self, name: &str, text: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().into_owned()
    }

    async fn kubectl(&self, args: &[&str]) -> Output {
        let out = tokio::process::Command::new(common::tool("kubectl"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
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

    async fn fails(&self, args: &[&str]) -> String {
        let out = self.kubectl(args).await;
        assert!(
            !out.status.success(),
            "kubectl {} succeeded",
            args.join(" ")
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    async fn install_crd(&self) {
        let crd = self.file("crd.yaml", CRD);
        self.ok(&["apply", "-f", &crd]).await;
        self.ok(&[
            "wait",
            "--for",
            "condition=established",
            "--timeout=20s",
            "crd/widgets.example.com",
        ])
        .await;
    }

    async fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&a).await).unwrap()
    }
}

fn widgets(client: kube::Client, version: &str) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("example.com", version, "Widget"),
        "widgets",
    );
    Api::namespaced_with(client, "default", &ar)
}

fn obj(v: Value) -> DynamicObject {
    serde_json::from_value(v).unwrap()
}

#[tokio::test]
async fn kubectl_installs_a_crd_and_serves_its_objects_with_printer_columns() {
    let env = Env::start().await;
    env.install_crd().await;
    let crd = env.json(&["get", "crd", "widgets.example.com"]).await;
    assert_eq!(crd["status"]["acceptedNames"]["kind"], "Widget");
    assert_eq!(crd["status"]["storedVersions"], json!(["v1"]));
    let widget = env.file("w1.yaml", WIDGET);
    env.ok(&["apply", "-f", &widget]).await;

    let table = env.ok(&["get", "widgets"]).await;
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "REPLICAS", "SIZE", "READY", "AGE"]);
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(&row[..3], ["w1", "2", "small"]);
    for alias in ["wd", "widget", "Widget", "widgets.example.com"] {
        assert!(
            env.ok(&["get", alias, "w1"]).await.contains("w1"),
            "{alias}"
        );
    }
    let yaml = env.ok(&["get", "widget", "w1", "-o", "yaml"]).await;
    assert!(yaml.contains("apiVersion: example.com/v1") && yaml.contains("generation: 1"));
    let described = env.ok(&["describe", "widget", "w1"]).await;
    assert!(described.contains("Kind:         Widget"), "{described}");

    // Spec changes count generations; status goes through /status only.
    env.ok(&["annotate", "widget", "w1", "team=blue"]).await;
    env.ok(&[
        "patch",
        "widget",
        "w1",
        "--type=merge",
        "-p",
        r#"{"spec":{"replicas":5}}"#,
    ])
    .await;
    env.ok(&[
        "patch",
        "widget",
        "w1",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"ready":true},"spec":{"replicas":9}}"#,
    ])
    .await;
    env.ok(&[
        "patch",
        "widget",
        "w1",
        "--type=merge",
        "-p",
        r#"{"status":{"ready":false}}"#,
    ])
    .await;
    let w = env.json(&["get", "widget", "w1"]).await;
    assert_eq!(w["metadata"]["annotations"]["team"], "blue");
    assert_eq!(w["spec"]["replicas"], 5);
    assert_eq!(w["status"]["ready"], true);
    assert_eq!(w["metadata"]["generation"], 2);

    // Server-side apply creates and updates.
    let w2 = env.file(
        "w2.yaml",
        "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w2\nspec:\n  size: large\n",
    );
    env.ok(&["apply", "--server-side", "-f", &w2]).await;
    assert_eq!(
        env.json(&["get", "widget", "w2"]).await["spec"]["size"],
        "large"
    );

    // Schema violations are refused naming the field.
    let bad = env.file(
        "bad.yaml",
        "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: bad\nspec:\n  replicas: three\n  size: medium\n",
    );
    let err = env.fails(&["apply", "-f", &bad]).await;
    assert!(
        err.contains(r#"spec.replicas: Invalid value: "string": spec.replicas in body must be of type integer: "string""#),
        "{err}"
    );
    assert!(
        err.contains(
            r#"spec.size: Unsupported value: "medium": supported values: "small", "large""#
        ),
        "{err}"
    );

    // Unknown fields: refused under kubectl's default strict validation, pruned without.
    let extra = env.file(
        "extra.yaml",
        "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w3\nspec:\n  size: small\n  color: red\n",
    );
    let err = env.fails(&["apply", "-f", &extra]).await;
    assert!(
        err.contains(r#"strict decoding error: unknown field "spec.color""#),
        "{err}"
    );
    env.ok(&["apply", "--validate=false", "-f", &extra]).await;
    let w3 = env.json(&["get", "widget", "w3"]).await;
    assert_eq!(w3["spec"], json!({"size": "small"}));
    env.ok(&["delete", "widget", "w3"]).await;

    let deleted = env.ok(&["delete", "widget", "w2"]).await;
    assert!(
        deleted.contains("widget.example.com \"w2\" deleted"),
        "{deleted}"
    );
    assert_eq!(env.cluster.count("widgets"), 1);
}

#[tokio::test]
async fn a_finalizer_keeps_a_deleted_custom_object_until_it_is_removed() {
    let env = Env::start().await;
    env.install_crd().await;
    let w = env.file(
        "w.yaml",
        "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: held\n  namespace: default\n  finalizers: [example.com/hold]\nspec:\n  size: small\n",
    );
    env.ok(&["apply", "-f", &w]).await;
    env.ok(&["delete", "widget", "held", "--wait=false"]).await;
    let held = env.json(&["get", "widget", "held"]).await;
    assert!(held["metadata"]["deletionTimestamp"].is_string(), "{held}");
    env.ok(&[
        "patch",
        "widget",
        "held",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    ])
    .await;
    let err = env.fails(&["get", "widget", "held"]).await;
    assert!(
        err.contains(r#"widgets.example.com "held" not found"#),
        "{err}"
    );
}

#[tokio::test]
async fn kube_rs_drives_custom_objects_in_every_served_version() {
    let env = Env::start().await;
    env.install_crd().await;
    let client = env.cluster.client().await.unwrap();
    let v1 = widgets(client.clone(), "v1");
    let created = v1
        .create(
            &PostParams::default(),
            &obj(json!({
                "apiVersion": "example.com/v1", "kind": "Widget",
                "metadata": {"name": "k1"},
                "spec": {"size": "large", "unknown": 1, "extra": {"kept": {"a": 1}}},
                "junk": true,
            })),
        )
        .await
        .unwrap();
    assert_eq!(
        created.data["spec"],
        json!({"size": "large", "extra": {"kept": {"a": 1}}})
    );
    assert!(created.data.get("junk").is_none());
    assert_eq!(created.metadata.generation, Some(1));

    // The same object through v1beta1, its apiVersion the request's.
    let beta = widgets(client.clone(), "v1beta1").get("k1").await.unwrap();
    assert_eq!(beta.types.unwrap().api_version, "example.com/v1beta1");

    let status = v1
        .patch_status(
            "k1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"ready": true}})),
        )
        .await
        .unwrap();
    assert_eq!(status.data["status"]["ready"], true);
    assert_eq!(status.metadata.generation, Some(1));

    let err = v1
        .patch(
            "k1",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"size": "small"}})),
        )
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(s) => assert_eq!(s.code, 415, "{s:?}"),
        other => panic!("{other}"),
    }
    let err = v1
        .create(
            &PostParams::default(),
            &obj(json!({"apiVersion": "example.com/v1", "kind": "Widget",
                "metadata": {"name": "k2"}, "spec": {"replicas": 1}})),
        )
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 422);
            assert_eq!(
                s.message,
                "Widget.example.com \"k2\" is invalid: spec.size: Required value"
            );
        }
        other => panic!("{other}"),
    }

    // Garbage collection follows owner references to custom owners.
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(client.clone(), "default");
    let uid = created.metadata.uid.clone().unwrap();
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "metadata": {"name": "owned", "ownerReferences": [{
                "apiVersion": "example.com/v1", "kind": "Widget", "name": "k1", "uid": uid}]},
            "data": {"a": "b"},
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    v1.delete("k1", &DeleteParams::default()).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while cms.get_opt("owned").await.unwrap().is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "dependent not collected"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_crd_of_one_cluster_is_not_served_by_another_and_deleting_it_deletes_its_objects() {
    let a = Env::start().await;
    let b = Env::start().await;
    a.install_crd().await;
    let err = b.fails(&["get", "widgets"]).await;
    assert!(
        err.contains("the server doesn't have a resource type \"widgets\""),
        "{err}"
    );
    let http = reqwest_like_get(&b.cluster.url(), "/apis/example.com/v1").await;
    assert_eq!(http, 404);

    let widget = a.file("w1.yaml", WIDGET);
    a.ok(&["apply", "-f", &widget]).await;
    // The same CRD in the second cluster: its own objects, none of the first's.
    b.install_crd().await;
    assert_eq!(b.ok(&["get", "widgets"]).await, "");
    assert_eq!(b.cluster.count("widgets"), 0);

    let client = a.cluster.client().await.unwrap();
    let api = widgets(client, "v1");
    let mut events = api
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    match events.try_next().await.unwrap() {
        Some(WatchEvent::Added(o)) => assert_eq!(o.metadata.name.as_deref(), Some("w1")),
        other => panic!("{other:?}"),
    }
    a.ok(&["delete", "crd", "widgets.example.com"]).await;
    match tokio::time::timeout(Duration::from_secs(10), events.try_next()).await {
        Ok(Ok(Some(WatchEvent::Deleted(o)))) => {
            assert_eq!(o.metadata.name.as_deref(), Some("w1"))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(a.cluster.count("widgets"), 0);
    // (kubectl's cached discovery still knows the type, so it asks and gets a 404.)
    let err = a.fails(&["get", "widgets"]).await;
    assert!(
        err.contains("the server could not find the requested resource")
            || err.contains("the server doesn't have a resource type"),
        "{err}"
    );
    // The other cluster still serves its own.
    b.ok(&["get", "widgets"]).await;
}

#[tokio::test]
async fn crd_validation_names_the_field() {
    let env = Env::start().await;
    let bad = CRD
        .replace("name: widgets.example.com", "name: gadgets.example.com")
        .replace("storage: false", "storage: true");
    let path = env.file("bad-crd.yaml", &bad);
    let err = env.fails(&["apply", "-f", &path]).await;
    assert!(
        err.contains(r#"metadata.name: Invalid value: "gadgets.example.com": must be spec.names.plural+"."+spec.group"#),
        "{err}"
    );
    assert!(
        err.contains("must have exactly one version marked as storage version"),
        "{err}"
    );
    let clash = CRD
        .replace("name: widgets.example.com", "name: pods.example.com")
        .replace("plural: widgets", "plural: pods");
    let path = env.file("clash.yaml", &clash);
    let err = env.fails(&["apply", "-f", &path]).await;
    assert!(
        err.contains("spec.names.plural: Invalid value: \"pods\""),
        "{err}"
    );
}

#[tokio::test]
async fn kubectl_get_watch_streams_custom_objects() {
    let env = Env::start().await;
    env.install_crd().await;
    let mut child = tokio::process::Command::new(common::tool("kubectl"))
        .arg("--kubeconfig")
        .arg(&env.kubeconfig)
        .args(["get", "widgets", "-w", "--request-timeout=20s"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let widget = env.file("w1.yaml", WIDGET);
    env.ok(&["apply", "-f", &widget]).await;
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let found = tokio::time::timeout(Duration::from_secs(15), async {
        while let Ok(Some(l)) = lines.next_line().await {
            if l.starts_with("w1 ") {
                return l;
            }
        }
        String::new()
    })
    .await
    .expect("watch shows the new widget");
    assert!(found.contains("small"), "{found}");
    let _ = child.kill().await;
}

/// The HTTP status of a plain GET (no client library's retries or discovery).
async fn reqwest_like_get(base: &str, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.unwrap();
    buf.split_whitespace().nth(1).unwrap().parse().unwrap()
}
