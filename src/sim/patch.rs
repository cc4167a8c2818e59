//! The four patch types the API server accepts: JSON merge patch (RFC 7386), JSON patch
//! (RFC 6902), strategic merge patch and (approximately) server-side apply.
//!
//! The strategic merge here is schema-free: lists merge by a key chosen from the field name
//! (`containers`, `volumes`, `env`, ... by `name`; container `ports` by `containerPort`;
//! `conditions` by `type`), which covers what kubectl sends (`set image`, `rollout restart`,
//! `cordon`, `patch`). Other lists are replaced, as in the real schema.

use serde_json::{Map, Value};

/// The patch flavour, from the request's `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Merge,
    Json,
    Strategic,
    Apply,
}

impl PatchType {
    pub fn from_content_type(ct: &str) -> Option<Self> {
        let base = ct.split(';').next().unwrap_or("").trim();
        match base {
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/json-patch+json" => Some(PatchType::Json),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => {
                Some(PatchType::Apply)
            }
            _ => None,
        }
    }
}

/// Applies `body` of type `pt` to `target`.
///
/// # Errors
/// A message for `400 BadRequest` (or 422 for JSON patch test failures, which the caller maps
/// to the same 422 the API server uses) when the body does not parse or a JSON patch op fails.
pub fn apply(pt: PatchType, target: &Value, body: &[u8]) -> Result<Value, String> {
    match pt {
        PatchType::Merge => {
            let p: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
            if !p.is_object() {
                return Err("json: cannot unmarshal merge patch: not an object".into());
            }
            let mut t = target.clone();
            json_patch::merge(&mut t, &p);
            Ok(t)
        }
        PatchType::Json => {
            let p: json_patch::Patch = serde_json::from_slice(body).map_err(|e| e.to_string())?;
            let mut t = target.clone();
            // The API server's JSON patch (evanphx/json-patch) lets `test` of a missing path
            // against null pass: kube-runtime's finalizer helper relies on it (`test
            // /metadata/finalizers null`, then `add`).
            let ops: Vec<json_patch::PatchOperation> =
                p.0.into_iter()
                    .filter(|op| match op {
                        json_patch::PatchOperation::Test(test) => {
                            !(test.value.is_null() && t.pointer(test.path.as_str()).is_none())
                        }
                        _ => true,
                    })
                    .collect();
            json_patch::patch(&mut t, &ops).map_err(|e| e.to_string())?;
            Ok(t)
        }
        PatchType::Strategic => {
            let p: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
            if !p.is_object() {
                return Err("strategic merge patch must be a JSON object".into());
            }
            let mut t = target.clone();
            strategic_merge(&mut t, &p);
            Ok(t)
        }
        PatchType::Apply => {
            let p: Value = serde_yaml::from_slice(body).map_err(|e| e.to_string())?;
            if !p.is_object() {
                return Err("apply patch must be an object".into());
            }
            let mut t = target.clone();
            strategic_merge(&mut t, &p);
            Ok(t)
        }
    }
}

/// The key a list named `field` merges by, judged from the field name and its items.
fn merge_key(field: &str, items: &[Value]) -> Option<&'static str> {
    let first = items.iter().find_map(Value::as_object);
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "resourceClaims" => Some("name"),
        "volumeMounts" => Some("mountPath"),
        "volumeDevices" => Some("devicePath"),
        "hostAliases" => Some("ip"),
        "conditions" => Some("type"),
        "ownerReferences" => Some("uid"),
        "topologySpreadConstraints" => Some("topologyKey"),
        "taints" => Some("key"),
        "ports" => {
            if first.is_some_and(|o| o.contains_key("containerPort")) {
                Some("containerPort")
            } else {
                Some("port")
            }
        }
        _ => None,
    }
}

/// Lists of scalars that merge as sets.
fn is_primitive_merge_list(field: &str) -> bool {
    matches!(field, "finalizers")
}

fn is_directive(k: &str) -> bool {
    k.starts_with("$setElementOrder/")
        || k.starts_with("$deleteFromPrimitiveList/")
        || k == "$retainKeys"
        || k == "$patch"
}

/// Strategic merge of `patch` into `target`, in place.
pub fn strategic_merge(target: &mut Value, patch: &Value) {
    let Some(pm) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    match pm.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            *target = Value::Object(strip_directives(pm));
            return;
        }
        Some("delete") => {
            *target = Value::Null;
            return;
        }
        _ => {}
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Some(tm) = target.as_object_mut() else {
        return;
    };
    for (k, pv) in pm {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Some(del)) = (tm.get_mut(field), pv.as_array()) {
                list.retain(|x| !del.contains(x));
            }
            continue;
        }
        if is_directive(k) {
            continue;
        }
        if pv.is_null() {
            tm.remove(k);
            continue;
        }
        match pv {
            Value::Object(_) => {
                let entry = tm.entry(k.clone()).or_insert(Value::Null);
                strategic_merge(entry, pv);
                if entry.is_null() {
                    tm.remove(k);
                }
            }
            Value::Array(items) => {
                if let (Some(mk), Some(Value::Array(existing))) =
                    (merge_key(k, items), tm.get_mut(k))
                {
                    merge_list(existing, items, mk);
                } else if is_primitive_merge_list(k) {
                    if let Some(Value::Array(existing)) = tm.get_mut(k) {
                        for it in items {
                            if !existing.contains(it) {
                                existing.push(it.clone());
                            }
                        }
                    } else {
                        tm.insert(k.clone(), pv.clone());
                    }
                } else {
                    let cleaned: Vec<Value> = items
                        .iter()
                        .filter(|i| i.get("$patch").is_none())
                        .map(|i| match i.as_object() {
                            Some(o) => Value::Object(strip_directives(o)),
                            None => i.clone(),
                        })
                        .collect();
                    tm.insert(k.clone(), Value::Array(cleaned));
                }
            }
            _ => {
                tm.insert(k.clone(), pv.clone());
            }
        }
    }
}

fn strip_directives(m: &Map<String, Value>) -> Map<String, Value> {
    m.iter()
        .filter(|(k, _)| !is_directive(k) && !k.starts_with('$'))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn merge_list(existing: &mut Vec<Value>, items: &[Value], key: &str) {
    if items
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        *existing = items
            .iter()
            .filter(|i| i.get("$patch").is_none())
            .cloned()
            .collect();
        return;
    }
    for item in items {
        let Some(kv) = item.get(key) else {
            existing.push(item.clone());
            continue;
        };
        let pos = existing.iter().position(|e| e.get(key) == Some(kv));
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (pos, delete) {
            (Some(p), true) => {
                existing.remove(p);
            }
            (None, true) => {}
            (Some(p), false) => strategic_merge(&mut existing[p], item),
            (None, false) => {
                let mut v = Value::Null;
                strategic_merge(&mut v, item);
                existing.push(v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn smp(t: Value, p: Value) -> Value {
        apply(PatchType::Strategic, &t, p.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn a_json_patch_test_of_a_missing_path_against_null_passes_as_on_the_api_server() {
        let target = json!({"metadata": {"name": "a"}});
        let body = br#"[{"op":"test","path":"/metadata/finalizers","value":null},
                        {"op":"add","path":"/metadata/finalizers","value":["f"]}]"#;
        let out = apply(PatchType::Json, &target, body).unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["f"]));
        let present = json!({"metadata": {"name": "a", "finalizers": ["g"]}});
        assert!(apply(PatchType::Json, &present, body).is_err());
    }

    #[test]
    fn set_image_merges_containers_by_name() {
        let t = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "web", "image": "nginx:1.25", "ports": [{"containerPort": 80}]},
            {"name": "sidecar", "image": "envoy:1"}
        ]}}}});
        let out = smp(
            t,
            json!({"spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "web"}, {"name": "sidecar"}],
                "containers": [{"name": "web", "image": "nginx:1.26"}]}}}}),
        );
        let cs = out.pointer("/spec/template/spec/containers").unwrap();
        assert_eq!(cs[0]["image"], "nginx:1.26");
        assert_eq!(cs[0]["ports"][0]["containerPort"], 80);
        assert_eq!(cs[1]["image"], "envoy:1");
        assert!(out
            .pointer("/spec/template/spec/$setElementOrder~1containers")
            .is_none());
    }

    #[test]
    fn null_deletes_and_patch_directives_apply() {
        let t = json!({"spec": {"unschedulable": true, "taints": [{"key": "a"}]},
            "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]});
        let out = smp(
            t,
            json!({"spec": {"unschedulable": null},
                "env": [{"name": "A", "$patch": "delete"}, {"name": "C", "value": "3"}]}),
        );
        assert!(out["spec"].get("unschedulable").is_none());
        assert_eq!(
            out["env"],
            json!([{"name": "B", "value": "2"}, {"name": "C", "value": "3"}])
        );
        let out = smp(out, json!({"spec": {"$patch": "replace", "x": 1}}));
        assert_eq!(out["spec"], json!({"x": 1}));
    }

    #[test]
    fn merge_patch_and_json_patch_follow_their_rfcs() {
        let t = json!({"a": {"b": 1, "c": [1, 2]}});
        let m = apply(PatchType::Merge, &t, br#"{"a":{"b":null,"c":[3]}}"#).unwrap();
        assert_eq!(m, json!({"a": {"c": [3]}}));
        let j = apply(
            PatchType::Json,
            &t,
            br#"[{"op":"replace","path":"/a/b","value":2},{"op":"add","path":"/a/c/-","value":9}]"#,
        )
        .unwrap();
        assert_eq!(j, json!({"a": {"b": 2, "c": [1, 2, 9]}}));
        assert!(apply(PatchType::Json, &t, br#"[{"op":"remove","path":"/zz"}]"#).is_err());
        assert!(apply(PatchType::Merge, &t, b"not json").is_err());
    }

    #[test]
    fn finalizers_merge_as_a_set() {
        let out = smp(
            json!({"metadata": {"finalizers": ["a"]}}),
            json!({"metadata": {"finalizers": ["a", "b"]}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["a", "b"]));
    }
}
