//! Legacy (unaggregated) discovery documents built from the resource table. kubectl asks for
//! aggregated discovery first; answering plain `application/json` makes it fall back to these.

use serde_json::{json, Value};

use super::resources::{group_versions, RESOURCES, VERBS_ALL};

/// The version the simulated server reports (matching the kubectl the tests drive, so no
/// skew warning).
const MAJOR: &str = "1";
const MINOR: &str = "37";

pub fn version() -> Value {
    json!({
        "major": MAJOR,
        "minor": MINOR,
        "gitVersion": format!("v{MAJOR}.{MINOR}.0-sim"),
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.25",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

pub fn root_paths() -> Value {
    let mut paths = vec![
        "/api".to_string(),
        "/api/v1".into(),
        "/apis".into(),
        "/version".into(),
        "/healthz".into(),
    ];
    for (g, v) in group_versions() {
        if !g.is_empty() {
            paths.push(format!("/apis/{g}"));
            paths.push(format!("/apis/{g}/{v}"));
        }
    }
    json!({ "paths": paths })
}

pub fn core_versions(addr: std::net::SocketAddr) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": addr.to_string()}],
    })
}

fn group_json(g: &str) -> Option<Value> {
    let versions: Vec<Value> = group_versions()
        .into_iter()
        .filter(|(gg, _)| *gg == g)
        .map(|(g, v)| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
        .collect();
    let first = versions.first()?.clone();
    Some(json!({"name": g, "versions": versions, "preferredVersion": first}))
}

pub fn group_list() -> Value {
    let mut groups: Vec<&str> = Vec::new();
    for (g, _) in group_versions() {
        if !g.is_empty() && !groups.contains(&g) {
            groups.push(g);
        }
    }
    json!({
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": groups.into_iter().filter_map(group_json).collect::<Vec<_>>(),
    })
}

pub fn group(g: &str) -> Option<Value> {
    let mut v = group_json(g)?;
    v["kind"] = json!("APIGroup");
    v["apiVersion"] = json!("v1");
    Some(v)
}

pub fn serves(g: &str, v: &str) -> bool {
    group_versions().contains(&(g, v))
}

pub fn resource_list(g: &str, v: &str) -> Value {
    let mut resources = Vec::new();
    for r in RESOURCES.iter().filter(|r| r.group == g && r.version == v) {
        let mut main = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": VERBS_ALL,
        });
        if !r.short_names.is_empty() {
            main["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            main["categories"] = json!(r.categories);
        }
        resources.push(main);
        for s in r.subresources {
            let mut sub = json!({
                "name": format!("{}/{}", r.plural, s.name),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": if s.kind.is_empty() { r.kind } else { s.kind },
                "verbs": s.verbs,
            });
            if !s.group.is_empty() || !s.version.is_empty() {
                sub["group"] = json!(s.group);
                sub["version"] = json!(s.version);
            }
            resources.push(sub);
        }
    }
    let gv = if g.is_empty() {
        v.to_string()
    } else {
        format!("{g}/{v}")
    };
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": gv,
        "resources": resources,
    })
}
