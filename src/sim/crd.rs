//! CustomResourceDefinitions: validation and status of the CRD objects, and the custom types
//! they register in one simulated cluster.
//!
//! Built-in types stay in the static table (`resources.rs`). A CRD's served versions become
//! [`ResourceDef`]s built at run time: their strings are leaked to get `&'static` like the
//! built-ins (every verb, the store and the watch fan-out take `&'static ResourceDef`), and
//! **interned** in a process-wide table, so installing the same CRD again — in this cluster
//! or in another in the same process — leaks nothing more; memory is bounded by the distinct
//! definitions ever seen (at most [`MAX_INTERNED`]). Which types a cluster serves is its own
//! list, [`State::custom`], rebuilt by [`sync`] after every CRD write: a CRD of one cluster
//! never shows in another.
//!
//! Objects of every served version share one store entry keyed by the plural (no
//! conversion: the same object, its `apiVersion` the one of the request path, see
//! [`present`]). A custom plural that a built-in type or another CRD of the cluster already
//! uses is refused (the store keys objects by plural).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use serde_json::{json, Value};

use super::resources::{by_plural as builtin_by_plural, ResourceDef, RESOURCES, STATUS_SUBS};
use super::schema::{self, Causes};
use super::store::{now_str, set_at, str_at, State};
use super::table::human_age;

/// Distinct custom definitions kept process-wide (each a few hundred leaked bytes).
pub const MAX_INTERNED: usize = 10_000;

/// An `additionalPrinterColumns` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    pub ty: String,
    pub json_path: String,
    pub priority: i64,
    pub description: String,
    pub format: String,
}

/// A type registered by a CRD of this cluster.
#[derive(Debug, Clone)]
pub struct CustomType {
    /// The CRD's name (`plural.group`) and uid.
    pub crd: String,
    pub uid: String,
    /// The storage version's definition (what controllers and the store use).
    pub storage: &'static ResourceDef,
    /// Served versions, preferred first.
    pub served: Vec<&'static ResourceDef>,
    /// `openAPIV3Schema` and printer columns per version name.
    pub schemas: HashMap<String, Value>,
    pub columns: HashMap<String, Vec<Column>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    group: String,
    version: String,
    plural: String,
    singular: String,
    kind: String,
    namespaced: bool,
    short_names: Vec<String>,
    categories: Vec<String>,
    has_status: bool,
}

static INTERNED: LazyLock<Mutex<HashMap<Key, &'static ResourceDef>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_string().into_boxed_str())
}

fn leak_all(v: &[String]) -> &'static [&'static str] {
    Box::leak(
        v.iter()
            .map(|s| leak(s))
            .collect::<Vec<_>>()
            .into_boxed_slice(),
    )
}

/// The one `&'static ResourceDef` for `key`, leaked the first time it is seen.
fn intern(key: Key) -> Option<&'static ResourceDef> {
    let mut table = INTERNED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(d) = table.get(&key) {
        return Some(d);
    }
    if table.len() >= MAX_INTERNED {
        return None;
    }
    let def: &'static ResourceDef = Box::leak(Box::new(ResourceDef {
        group: leak(&key.group),
        version: leak(&key.version),
        plural: leak(&key.plural),
        singular: leak(&key.singular),
        kind: leak(&key.kind),
        namespaced: key.namespaced,
        short_names: leak_all(&key.short_names),
        categories: leak_all(&key.categories),
        has_status: key.has_status,
        subresources: if key.has_status { STATUS_SUBS } else { &[] },
        verbs: super::resources::VERBS_ALL,
        custom: true,
    }));
    table.insert(key, def);
    Some(def)
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn versions(crd: &Value) -> Vec<Value> {
    crd.pointer("/spec/versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// Kubernetes' version priority: GA before beta before alpha, higher numbers first, then
/// anything else alphabetically.
fn version_rank(v: &str) -> (u8, i64, i64, String) {
    let parse = || -> Option<(u8, i64, i64)> {
        let rest = v.strip_prefix('v')?;
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let major: i64 = digits.parse().ok()?;
        let tail = &rest[digits.len()..];
        if tail.is_empty() {
            return Some((0, -major, 0));
        }
        for (i, pre) in [(1u8, "beta"), (2, "alpha")] {
            if let Some(n) = tail.strip_prefix(pre) {
                let minor: i64 = n.parse().ok()?;
                return Some((i, -major, -minor));
            }
        }
        None
    };
    match parse() {
        Some((a, b, c)) => (a, b, c, String::new()),
        None => (3, 0, 0, v.to_string()),
    }
}

fn columns_of(v: &Value) -> Vec<Column> {
    v.get("additionalPrinterColumns")
        .and_then(Value::as_array)
        .map(|cols| {
            cols.iter()
                .map(|c| Column {
                    name: str_at(c, "/name").to_string(),
                    ty: str_at(c, "/type").to_string(),
                    json_path: str_at(c, "/jsonPath").to_string(),
                    priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
                    description: str_at(c, "/description").to_string(),
                    format: str_at(c, "/format").to_string(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The type a (valid) CRD object registers; `None` when it cannot be built.
fn build(crd: &Value) -> Option<CustomType> {
    let names = |f: &str| str_at(crd, &format!("/spec/names/{f}")).to_string();
    let kind = names("kind");
    let singular = match names("singular") {
        s if s.is_empty() => kind.to_lowercase(),
        s => s,
    };
    let mut ct = CustomType {
        crd: str_at(crd, "/metadata/name").to_string(),
        uid: str_at(crd, "/metadata/uid").to_string(),
        storage: &RESOURCES[0],
        served: Vec::new(),
        schemas: HashMap::new(),
        columns: HashMap::new(),
    };
    let mut storage = None;
    let mut served = Vec::new();
    for v in versions(crd) {
        let version = str_at(&v, "/name").to_string();
        let def = intern(Key {
            group: str_at(crd, "/spec/group").to_string(),
            version: version.clone(),
            plural: names("plural"),
            singular: singular.clone(),
            kind: kind.clone(),
            namespaced: str_at(crd, "/spec/scope") == "Namespaced",
            short_names: strings(crd.pointer("/spec/names/shortNames")),
            categories: strings(crd.pointer("/spec/names/categories")),
            has_status: v.pointer("/subresources/status").is_some(),
        })?;
        if v.get("storage") == Some(&Value::Bool(true)) {
            storage = Some(def);
        }
        if v.get("served") == Some(&Value::Bool(true)) {
            served.push(def);
        }
        if let Some(s) = v.pointer("/schema/openAPIV3Schema") {
            ct.schemas.insert(version.clone(), s.clone());
        }
        ct.columns.insert(version, columns_of(&v));
    }
    served.sort_by_key(|d| version_rank(d.version));
    ct.storage = storage?;
    ct.served = served;
    Some(ct)
}

/// Makes this cluster serve exactly the types its CRD objects define: new CRDs register,
/// changed ones are rebuilt (their objects kept), deleted ones unregister and lose their
/// objects (DELETED events). Called after every CRD write.
pub fn sync(st: &mut State) {
    let want: Vec<CustomType> = st
        .list("customresourcedefinitions", None)
        .iter()
        .filter_map(|c| build(c))
        .collect();
    let old = std::mem::take(&mut st.custom);
    for o in &old {
        let kept = want
            .iter()
            .any(|w| w.uid == o.uid && w.storage.plural == o.storage.plural);
        if !kept {
            st.close_plural(o.storage);
        }
    }
    for w in &want {
        st.open_plural(w.storage.plural);
    }
    st.custom = want;
}

impl State {
    /// Every type this cluster stores: the built-ins, then each custom type's storage version.
    pub fn defs(&self) -> Vec<&'static ResourceDef> {
        RESOURCES
            .iter()
            .chain(self.custom.iter().map(|c| c.storage))
            .collect()
    }

    /// Every served group-version-resource: the built-ins, then the custom types' served
    /// versions (for discovery).
    pub fn served_defs(&self) -> Vec<&'static ResourceDef> {
        RESOURCES
            .iter()
            .chain(self.custom.iter().flat_map(|c| c.served.iter().copied()))
            .collect()
    }

    /// The type served at `group/version/plural`, built-in or custom.
    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<&'static ResourceDef> {
        super::resources::lookup(group, version, plural).or_else(|| {
            self.custom
                .iter()
                .flat_map(|c| c.served.iter().copied())
                .find(|d| d.group == group && d.version == version && d.plural == plural)
        })
    }

    /// The type stored under `plural` (a custom type's storage version).
    pub fn def_of_plural(&self, plural: &str) -> Option<&'static ResourceDef> {
        builtin_by_plural(plural).or_else(|| {
            self.custom
                .iter()
                .find(|c| c.storage.plural == plural)
                .map(|c| c.storage)
        })
    }

    /// The custom type `def` belongs to.
    pub fn custom_type(&self, def: &ResourceDef) -> Option<&CustomType> {
        self.custom.iter().find(|c| c.storage.plural == def.plural)
    }
}

/// A custom object as answered on `def`'s path: its `apiVersion` is the request's.
pub fn present(def: &ResourceDef, obj: &Value) -> Value {
    let mut o = obj.clone();
    if def.custom {
        set_at(&mut o, "/apiVersion", json!(def.api_version()));
    }
    o
}

/// Defaulting of a custom object: prunes what its version's schema does not declare.
pub fn default_custom(def: &ResourceDef, obj: &mut Value, st: &State) {
    if let Some(s) = st.custom_type(def).and_then(|c| c.schemas.get(def.version)) {
        schema::prune_root(s, obj);
    }
}

/// The fields of `obj` its version's schema would prune (`spec.foo`, `junk`), in order.
pub fn unknown_fields(st: &State, def: &ResourceDef, obj: &Value) -> Vec<String> {
    let Some(s) = st.custom_type(def).and_then(|c| c.schemas.get(def.version)) else {
        return Vec::new();
    };
    let mut pruned = obj.clone();
    schema::prune_root(s, &mut pruned);
    let mut out = Vec::new();
    missing(obj, &pruned, "", &mut out);
    out
}

fn missing(full: &Value, kept: &Value, path: &str, out: &mut Vec<String>) {
    let join = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    match (full, kept) {
        (Value::Object(f), Value::Object(k)) => {
            for (key, v) in f {
                match k.get(key) {
                    None => out.push(join(key)),
                    Some(kv) => missing(v, kv, &join(key), out),
                }
            }
        }
        (Value::Array(f), Value::Array(k)) => {
            for (i, (fv, kv)) in f.iter().zip(k).enumerate() {
                missing(fv, kv, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// Validation of a custom object against its version's schema.
pub fn validate_custom(def: &ResourceDef, obj: &Value, st: &State) -> Causes {
    st.custom_type(def)
        .and_then(|c| c.schemas.get(def.version))
        .map(|s| schema::validate_root(s, obj))
        .unwrap_or_default()
}

fn condition(ty: &str, reason: &str, message: &str, old: Option<&Value>) -> Value {
    let since = old
        .and_then(|o| o.pointer("/status/conditions"))
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| str_at(c, "/type") == ty))
        .filter(|c| str_at(c, "/status") == "True")
        .map(|c| str_at(c, "/lastTransitionTime").to_string())
        .filter(|t| !t.is_empty())
        .unwrap_or_else(now_str);
    json!({"type": ty, "status": "True", "lastTransitionTime": since, "reason": reason, "message": message})
}

/// CRD defaulting: `singular`, `listKind`, `conversion`, and the status the real
/// controllers write (accepted names, `NamesAccepted` and `Established`, stored versions).
pub fn default_crd(obj: &mut Value) {
    let kind = str_at(obj, "/spec/names/kind").to_string();
    if str_at(obj, "/spec/names/singular").is_empty() && !kind.is_empty() {
        set_at(obj, "/spec/names/singular", json!(kind.to_lowercase()));
    }
    if str_at(obj, "/spec/names/listKind").is_empty() && !kind.is_empty() {
        set_at(obj, "/spec/names/listKind", json!(format!("{kind}List")));
    }
    if obj.pointer("/spec/conversion").is_none() {
        set_at(obj, "/spec/conversion", json!({"strategy": "None"}));
    }
    let old = obj.clone();
    let accepted = obj.pointer("/spec/names").cloned().unwrap_or(json!({}));
    set_at(obj, "/status/acceptedNames", accepted);
    set_at(
        obj,
        "/status/conditions",
        json!([
            condition(
                "NamesAccepted",
                "NoConflicts",
                "no conflicts found",
                Some(&old)
            ),
            condition(
                "Established",
                "InitialNamesAccepted",
                "the initial names have been accepted",
                Some(&old)
            ),
        ]),
    );
    let mut stored = strings(old.pointer("/status/storedVersions"));
    for v in versions(&old) {
        let name = str_at(&v, "/name");
        if v.get("storage") == Some(&Value::Bool(true)) && !stored.iter().any(|s| s == name) {
            stored.push(name.to_string());
        }
    }
    set_at(obj, "/status/storedVersions", json!(stored));
}

fn is_dns1035(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

const DNS1035_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";

/// CRD validation, with the apiextensions-apiserver's messages, plus the simulator's own
/// refusal of a plural another type of the cluster already uses.
pub fn validate_crd(obj: &Value, old: Option<&Value>, st: &State) -> Causes {
    let mut c = Causes::new();
    let name = str_at(obj, "/metadata/name");
    let group = str_at(obj, "/spec/group");
    let plural = str_at(obj, "/spec/names/plural");
    if name != format!("{plural}.{group}") {
        c.push((
            "metadata.name".into(),
            format!("Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"),
        ));
    }
    if group.is_empty() {
        c.push(("spec.group".into(), "Required value".into()));
    } else if !super::admission::is_dns_subdomain(group) {
        c.push(("spec.group".into(), format!("Invalid value: \"{group}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character")));
    } else if !group.contains('.') {
        c.push((
            "spec.group".into(),
            format!("Invalid value: \"{group}\": should be a domain with at least one dot"),
        ));
    }
    match str_at(obj, "/spec/scope") {
        "" => c.push(("spec.scope".into(), "Required value".into())),
        "Cluster" | "Namespaced" => {}
        s => c.push((
            "spec.scope".into(),
            format!("Unsupported value: \"{s}\": supported values: \"Cluster\", \"Namespaced\""),
        )),
    }
    let vs = versions(obj);
    let mut seen: Vec<&str> = Vec::new();
    let mut unique = true;
    let mut storage = 0;
    for (i, v) in vs.iter().enumerate() {
        let vname = str_at(v, "/name");
        if seen.contains(&vname) {
            unique = false;
        }
        seen.push(vname);
        if v.get("storage") == Some(&Value::Bool(true)) {
            storage += 1;
        }
        if !is_dns1035(vname) {
            c.push((
                format!("spec.versions[{i}].name"),
                format!("Invalid value: \"{vname}\": {DNS1035_MSG}"),
            ));
        }
        match v.pointer("/schema/openAPIV3Schema") {
            None => c.push((
                format!("spec.versions[{i}].schema.openAPIV3Schema"),
                "Required value: schemas are required".into(),
            )),
            Some(s) if str_at(s, "/type") != "object" => c.push((
                format!("spec.versions[{i}].schema.openAPIV3Schema.type"),
                format!(
                    "Unsupported value: \"{}\": supported values: \"object\"",
                    str_at(s, "/type")
                ),
            )),
            _ => {}
        }
    }
    let versions_json = obj
        .pointer("/spec/versions")
        .map_or("null".to_string(), |v| v.to_string());
    if !unique {
        c.push((
            "spec.versions".into(),
            format!("Invalid value: {versions_json}: must contain unique version names"),
        ));
    }
    if storage != 1 {
        c.push((
            "spec.versions".into(),
            format!("Invalid value: {versions_json}: must have exactly one version marked as storage version"),
        ));
    }
    for f in ["plural", "singular", "kind", "listKind"] {
        let v = str_at(obj, &format!("/spec/names/{f}"));
        if v.is_empty() {
            c.push((format!("spec.names.{f}"), "Required value".into()));
        } else if matches!(f, "plural" | "singular") && !is_dns1035(v) {
            c.push((
                format!("spec.names.{f}"),
                format!("Invalid value: \"{v}\": {DNS1035_MSG}"),
            ));
        }
    }
    if let Some(old) = old {
        for (field, ptr) in [
            ("spec.group", "/spec/group"),
            ("spec.names.plural", "/spec/names/plural"),
        ] {
            let (now, was) = (str_at(obj, ptr), str_at(old, ptr));
            if now != was {
                c.push((
                    field.into(),
                    format!("Invalid value: \"{now}\": field is immutable"),
                ));
            }
        }
    }
    if !plural.is_empty() {
        let taken = builtin_by_plural(plural)
            .map(|d| d.qualified())
            .or_else(|| {
                st.custom
                    .iter()
                    .find(|t| t.storage.plural == plural && t.crd != name)
                    .map(|t| t.crd.clone())
            });
        if let Some(other) = taken {
            c.push((
                "spec.names.plural".into(),
                format!("Invalid value: \"{plural}\": the simulated cluster stores objects by plural and {other} already uses it (a simulator limitation)"),
            ));
        }
    }
    c
}

/// Evaluates a printer column's simple JSONPath (`.a.b[0].c`) on `obj`.
pub fn json_path<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    let path = path.trim().trim_start_matches('{').trim_end_matches('}');
    let mut cur = obj;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (field, indices) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !field.is_empty() {
            cur = cur.get(field)?;
        }
        for idx in indices.split('[').filter(|s| !s.is_empty()) {
            let n: usize = idx.trim_end_matches(']').parse().ok()?;
            cur = cur.get(n)?;
        }
    }
    Some(cur)
}

fn cell(col: &Column, obj: &Value) -> Value {
    let Some(v) = json_path(obj, &col.json_path) else {
        return Value::Null;
    };
    match col.ty.as_str() {
        "date" => match v.as_str().map(chrono::DateTime::parse_from_rfc3339) {
            Some(Ok(t)) => json!(human_age(
                (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds()
            )),
            _ => Value::Null,
        },
        "integer" | "number" | "boolean" => v.clone(),
        _ => match v {
            Value::String(s) => json!(s),
            Value::Null => Value::Null,
            other => json!(other.to_string()),
        },
    }
}

/// The `kubectl get` table of custom objects: NAME then the version's
/// `additionalPrinterColumns`; a version without columns gets AGE, as the real server.
pub fn table(ct: &CustomType, def: &ResourceDef, items: &[Arc<Value>], rv: u64) -> Value {
    let mut cols = ct.columns.get(def.version).cloned().unwrap_or_default();
    if cols.is_empty() {
        cols.push(Column {
            name: "Age".into(),
            ty: "date".into(),
            json_path: ".metadata.creationTimestamp".into(),
            priority: 0,
            description: String::new(),
            format: String::new(),
        });
    }
    let mut defs = vec![
        json!({"name": "Name", "type": "string", "format": "name", "description": "Name must be unique within a namespace.", "priority": 0}),
    ];
    defs.extend(cols.iter().map(|c| {
        json!({"name": c.name, "type": if c.ty == "date" { "date" } else { c.ty.as_str() }, "format": c.format, "description": c.description, "priority": c.priority})
    }));
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let mut cells = vec![json!(str_at(o, "/metadata/name"))];
            cells.extend(cols.iter().map(|c| cell(c, o)));
            json!({"cells": cells, "object": {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": o.get("metadata").cloned().unwrap_or(json!({})),
            }})
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": rv.to_string()},
        "columnDefinitions": defs,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_like_kubernetes() {
        let mut v = vec!["v1alpha1", "v2", "v1beta2", "v1", "foo", "v1beta1"];
        v.sort_by_key(|s| version_rank(s));
        assert_eq!(v, vec!["v2", "v1", "v1beta2", "v1beta1", "v1alpha1", "foo"]);
    }

    #[test]
    fn equal_definitions_are_interned_once() {
        let key = Key {
            group: "example.com".into(),
            version: "v1".into(),
            plural: "widgets".into(),
            singular: "widget".into(),
            kind: "Widget".into(),
            namespaced: true,
            short_names: vec!["wd".into()],
            categories: vec![],
            has_status: true,
        };
        let a = intern(key.clone()).unwrap();
        let b = intern(key).unwrap();
        assert!(std::ptr::eq(a, b));
    }

    #[test]
    fn json_paths_follow_fields_and_indices() {
        let o = json!({"spec": {"a": [{"b": 3}]}});
        assert_eq!(json_path(&o, ".spec.a[0].b"), Some(&json!(3)));
        assert_eq!(json_path(&o, ".spec.x"), None);
    }
}
