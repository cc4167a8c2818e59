//! Legacy (unaggregated) discovery documents built from the resource table. kubectl asks for
//! aggregated discovery first; answering plain `application/json` makes it fall back to these.

use serde_json::{json, Value};

use super::resources::{group_versions, ResourceDef};

/// The served types discovery describes: built-ins and this cluster's custom types.
pub type Defs<'a> = &'a [&'static ResourceDef];

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

pub fn root_paths(defs: Defs) -> Value {
    let mut paths = vec![
        "/api".to_string(),
        "/api/v1".into(),
        "/apis".into(),
        "/version".into(),
        "/healthz".into(),
    ];
    for (g, v) in group_versions(defs) {
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

fn group_json(defs: Defs, g: &str) -> Option<Value> {
    // Custom types list their served versions preferred first, as the real server orders them.
    let versions: Vec<Value> = group_versions(defs)
        .into_iter()
        .filter(|(gg, _)| *gg == g)
        .map(|(g, v)| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
        .collect();
    let first = versions.first()?.clone();
    Some(json!({"name": g, "versions": versions, "preferredVersion": first}))
}

pub fn group_list(defs: Defs) -> Value {
    let mut groups: Vec<&str> = Vec::new();
    for (g, _) in group_versions(defs) {
        if !g.is_empty() && !groups.contains(&g) {
            groups.push(g);
        }
    }
    json!({
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": groups
            .into_iter()
            .filter_map(|g| group_json(defs, g))
            .chain([super::metrics::group()])
            .collect::<Vec<_>>(),
    })
}

pub fn group(defs: Defs, g: &str) -> Option<Value> {
    let mut v = group_json(defs, g)?;
    v["kind"] = json!("APIGroup");
    v["apiVersion"] = json!("v1");
    Some(v)
}

pub fn serves(defs: Defs, g: &str, v: &str) -> bool {
    group_versions(defs).contains(&(g, v))
}

pub fn resource_list(defs: Defs, g: &str, v: &str) -> Value {
    let mut resources = Vec::new();
    for r in defs.iter().filter(|r| r.group == g && r.version == v) {
        let mut main = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": r.verbs,
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

/// `/openapi/v3`: one document per group-version. The documents are skeletal — they
/// declare each resource's operations with the `fieldValidation` parameter (so kubectl
/// leaves validation to the server) and an open schema per kind — enough for
/// `kubectl apply` with its default `--validate=strict`; `kubectl explain` shows no fields.
pub fn openapi_v3_root(defs: Defs) -> Value {
    let mut paths = serde_json::Map::new();
    for (g, v) in group_versions(defs) {
        let key = if g.is_empty() {
            format!("api/{v}")
        } else {
            format!("apis/{g}/{v}")
        };
        paths.insert(
            key.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash={}", doc_hash(defs, g, v))}),
        );
    }
    json!({ "paths": paths })
}

/// A hash of what a group-version's document describes, so clients caching documents by
/// hash refetch after a CRD changes the types served.
fn doc_hash(defs: Defs, g: &str, v: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for r in defs.iter().filter(|r| r.group == g && r.version == v) {
        (r.plural, r.kind, r.namespaced, r.has_status).hash(&mut h);
    }
    format!("{:016x}", h.finish())
}

/// The skeletal OpenAPI v3 document of one group-version (see [`openapi_v3_root`]).
pub fn openapi_v3_doc(defs: Defs, g: &str, v: &str) -> Option<Value> {
    if !serves(defs, g, v) {
        return None;
    }
    let params = json!([
        {"name": "dryRun", "in": "query", "schema": {"type": "string"}, "uniqueItems": true},
        {"name": "fieldManager", "in": "query", "schema": {"type": "string"}, "uniqueItems": true},
        {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}, "uniqueItems": true},
    ]);
    let mut paths = serde_json::Map::new();
    let mut schemas = serde_json::Map::new();
    let prefix = if g.is_empty() {
        format!("/api/{v}")
    } else {
        format!("/apis/{g}/{v}")
    };
    for r in defs.iter().filter(|r| r.group == g && r.version == v) {
        let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
        let schema_name = format!(
            "io.k8s.sim.{}.{}.{}",
            if g.is_empty() { "core" } else { g },
            v,
            r.kind
        );
        let reference = json!({"$ref": format!("#/components/schemas/{schema_name}")});
        let op = |action: &str| {
            json!({
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk,
                "parameters": params,
                "requestBody": {"content": {"application/json": {"schema": reference}}},
                "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": reference}}}},
            })
        };
        let (collection, item) = if r.namespaced {
            (
                format!("{prefix}/namespaces/{{namespace}}/{}", r.plural),
                format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", r.plural),
            )
        } else {
            (
                format!("{prefix}/{}", r.plural),
                format!("{prefix}/{}/{{name}}", r.plural),
            )
        };
        paths.insert(collection, json!({"post": op("post")}));
        paths.insert(item, json!({"put": op("put"), "patch": op("patch")}));
        schemas.insert(
            schema_name,
            json!({
                "type": "object",
                "description": format!("{} (schema not modelled by the simulated cluster)", r.kind),
                "x-kubernetes-preserve-unknown-fields": true,
                "x-kubernetes-group-version-kind": [gvk],
            }),
        );
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes (simulated)", "version": format!("v{MAJOR}.{MINOR}.0")},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}
