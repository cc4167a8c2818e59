//! The verbs, on a locked [`State`]: create, update, patch, delete, the `/scale` and
//! `/status` subresources, eviction and logs. HTTP-free so controllers and scenario seeding
//! use the same paths (and the same validation) as clients.

use std::collections::HashMap;

use serde_json::{json, Value};

use super::admission;
use super::controllers::{disruption, kubelet};
use super::crd;
use super::errors::ApiError;
use super::patch::{self, PatchType};
use super::resources::{by_plural, ResourceDef, RESOURCES};
use super::selectors::LabelSelector;
use super::store::{int_at, now_str, set_at, str_at, State};

/// Longest grace period honoured (a year); larger requests are clamped, never an overflow.
const MAX_GRACE_SECONDS: i64 = 365 * 24 * 3600;

/// Letters the API server uses for generated name suffixes (no vowels, no look-alikes).
const NAME_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// A random 5-character suffix, as `generateName` and ReplicaSet pod names use.
pub fn random_suffix(n: usize) -> String {
    (0..n)
        .map(|_| NAME_ALPHABET[rand::random_range(0..NAME_ALPHABET.len())] as char)
        .collect()
}

fn namespace_def() -> &'static ResourceDef {
    &RESOURCES[0]
}

/// Creates an object. `ns` is the namespace from the URL (namespaced types only).
///
/// # Errors
/// 400 on a namespace mismatch, 404 when the namespace does not exist, 403 when it is
/// terminating, 409 AlreadyExists, 422 Invalid.
pub fn create(
    st: &mut State,
    def: &'static ResourceDef,
    ns: Option<&str>,
    mut obj: Value,
    dry: bool,
) -> Result<Value, ApiError> {
    if let Some(kind) = obj.get("kind").and_then(Value::as_str) {
        if kind != def.kind {
            return Err(ApiError::bad_request(format!(
                "the kind of the object ({kind}) does not match the expected kind ({})",
                def.kind
            )));
        }
    }
    if def.namespaced {
        let url_ns = ns.unwrap_or("");
        let body_ns = str_at(&obj, "/metadata/namespace").to_string();
        let ns = if url_ns.is_empty() {
            body_ns.clone()
        } else {
            url_ns.to_string()
        };
        if !body_ns.is_empty() && body_ns != ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        match st.get("namespaces", "", &ns) {
            None => return Err(ApiError::not_found(namespace_def(), &ns)),
            Some(n) if n.pointer("/metadata/deletionTimestamp").is_some() => {
                return Err(ApiError::forbidden(
                    def,
                    str_at(&obj, "/metadata/name"),
                    &format!("unable to create new content in namespace {ns} because it is being terminated"),
                ))
            }
            _ => {}
        }
        set_at(&mut obj, "/metadata/namespace", json!(ns));
    } else if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("namespace");
    }
    if str_at(&obj, "/metadata/name").is_empty() {
        let gen = str_at(&obj, "/metadata/generateName").to_string();
        if !gen.is_empty() {
            set_at(
                &mut obj,
                "/metadata/name",
                json!(format!("{gen}{}", random_suffix(5))),
            );
        }
    }
    let (ons, oname) = (
        str_at(&obj, "/metadata/namespace").to_string(),
        str_at(&obj, "/metadata/name").to_string(),
    );
    State::prepare_new(def, &mut obj);
    strict_fields(st, def, &obj)?;
    admission::default(def, &mut obj, st);
    admission::validate(def, &obj, None, st)?;
    if st.get(def.plural, &ons, &oname).is_some() {
        return Err(ApiError::already_exists(def, &oname));
    }
    if dry {
        return Ok(obj);
    }
    stamp_managed_fields(&mut obj, st.writer.as_ref(), def);
    let out = (*st.insert(def, obj)).clone();
    after_write(st, def);
    Ok(out)
}

/// Under `fieldValidation=Strict`, the fields a custom object's schema would prune are a
/// `400 BadRequest` (as the API server's strict decoding answers).
fn strict_fields(st: &State, def: &ResourceDef, obj: &Value) -> Result<(), ApiError> {
    if !def.custom || !st.writer.as_ref().is_some_and(|w| w.strict) {
        return Ok(());
    }
    let unknown = crd::unknown_fields(st, def, obj);
    if unknown.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = unknown
        .iter()
        .map(|f| format!("unknown field {f:?}"))
        .collect();
    Err(ApiError::bad_request(format!(
        "{} in version {:?} cannot be handled as a {}: strict decoding error: {}",
        def.kind,
        def.version,
        def.kind,
        list.join(", ")
    )))
}

/// A CRD written or removed changes the types the cluster serves.
fn after_write(st: &mut State, def: &ResourceDef) {
    if def.kind == "CustomResourceDefinition" && def.group == "apiextensions.k8s.io" {
        crd::sync(st);
    }
}

/// Whether an update changes what `metadata.generation` counts: the spec, or for a custom
/// object everything outside metadata and status.
fn bumps_generation(def: &ResourceDef, old: &Value, new: &Value) -> bool {
    if !def.custom {
        return old.get("spec") != new.get("spec");
    }
    let body = |v: &Value| -> Value {
        let mut v = v.clone();
        if let Some(m) = v.as_object_mut() {
            for k in ["metadata", "status", "apiVersion", "kind"] {
                m.remove(k);
            }
        }
        v
    };
    body(old) != body(new)
}

/// Copies what a client may not change on the main resource from `old` into `new`.
fn carry_over(def: &ResourceDef, old: &Value, new: &mut Value) {
    for f in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
        "namespace",
        "name",
    ] {
        match old.pointer(&format!("/metadata/{f}")) {
            Some(v) => set_at(new, &format!("/metadata/{f}"), v.clone()),
            None => {
                if let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut) {
                    m.remove(f);
                }
            }
        }
    }
    set_at(new, "/apiVersion", json!(def.api_version()));
    set_at(new, "/kind", json!(def.kind));
    if def.has_status {
        match old.get("status") {
            Some(s) => set_at(new, "/status", s.clone()),
            None => {
                if let Some(m) = new.as_object_mut() {
                    m.remove("status");
                }
            }
        }
    }
}

/// Defaults, validates and stores `new` as the successor of `old` (unless `dry`): bumps
/// `generation` on spec changes and finishes a deletion whose finalizers are all gone.
pub fn commit_update(
    st: &mut State,
    def: &'static ResourceDef,
    old: &Value,
    mut new: Value,
    dry: bool,
) -> Result<Value, ApiError> {
    strict_fields(st, def, &new)?;
    admission::default(def, &mut new, st);
    admission::validate(def, &new, Some(old), st)?;
    if bumps_generation(def, old, &new) {
        let g = int_at(old, "/metadata/generation", 1);
        set_at(&mut new, "/metadata/generation", json!(g + 1));
    }
    if dry {
        return Ok(new);
    }
    let finalizers_gone = new
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty);
    if new.pointer("/metadata/deletionTimestamp").is_some()
        && finalizers_gone
        && def.kind != "Pod"
        && def.kind != "Namespace"
    {
        let (ns, name) = (
            str_at(&new, "/metadata/namespace").to_string(),
            str_at(&new, "/metadata/name").to_string(),
        );
        st.replace(def, new.clone());
        st.remove(def, &ns, &name);
        after_write(st, def);
        return Ok(new);
    }
    stamp_managed_fields(&mut new, st.writer.as_ref(), def);
    let out = (*st.replace(def, new)).clone();
    after_write(st, def);
    Ok(out)
}

/// Records a client's write in `metadata.managedFields` as the API server does: one entry per
/// manager, operation and subresource, its time moved on each write (the field sets are not
/// tracked). Controllers' own writes carry no writer and are not recorded.
fn stamp_managed_fields(obj: &mut Value, writer: Option<&Writer>, def: &ResourceDef) {
    let Some(writer) = writer else {
        return;
    };
    let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    let entries = meta.entry("managedFields").or_insert_with(|| json!([]));
    if !entries.is_array() {
        *entries = json!([]);
    }
    let Some(list) = entries.as_array_mut() else {
        return;
    };
    let now = crate::sim::store::now_str();
    let same = |e: &Value| {
        str_at(e, "/manager") == writer.manager
            && str_at(e, "/operation") == writer.operation
            && str_at(e, "/subresource") == writer.subresource
    };
    match list.iter_mut().find(|e| same(e)) {
        Some(entry) => entry["time"] = json!(now),
        None => {
            let mut entry = json!({
                "manager": writer.manager,
                "operation": writer.operation,
                "apiVersion": def.api_version(),
                "time": now,
                "fieldsType": "FieldsV1",
                "fieldsV1": {},
            });
            if !writer.subresource.is_empty() {
                entry["subresource"] = json!(writer.subresource);
            }
            list.push(entry);
        }
    }
}

/// A client writing through the API: its field manager, `Update` or `Apply`, and the
/// subresource written (empty for the object itself).
#[derive(Debug, Clone, Default)]
pub struct Writer {
    pub manager: String,
    pub operation: &'static str,
    pub subresource: String,
    /// `fieldValidation=Strict`: unknown fields of a custom object are an error, not pruned.
    pub strict: bool,
}

fn check_rv(def: &ResourceDef, old: &Value, new: &Value, name: &str) -> Result<(), ApiError> {
    let want = str_at(new, "/metadata/resourceVersion");
    if !want.is_empty() && want != str_at(old, "/metadata/resourceVersion") {
        return Err(ApiError::conflict(def, name));
    }
    Ok(())
}

/// The `autoscaling/v1 Scale` view of a deployment, replicaset or statefulset.
pub fn scale_of(obj: &Value) -> Value {
    let sel = LabelSelector::from_json(obj.pointer("/spec/selector")).to_string_form();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": str_at(obj, "/metadata/name"),
            "namespace": str_at(obj, "/metadata/namespace"),
            "uid": str_at(obj, "/metadata/uid"),
            "resourceVersion": str_at(obj, "/metadata/resourceVersion"),
            "creationTimestamp": str_at(obj, "/metadata/creationTimestamp"),
        },
        "spec": {"replicas": int_at(obj, "/spec/replicas", 0)},
        "status": {"replicas": int_at(obj, "/status/replicas", 0), "selector": sel},
    })
}

/// Applies a new desired `Scale` to its parent object.
fn apply_scale(
    st: &mut State,
    def: &'static ResourceDef,
    old: &Value,
    scale: &Value,
    dry: bool,
) -> Result<Value, ApiError> {
    let name = str_at(old, "/metadata/name").to_string();
    check_rv(def, old, scale, &name)?;
    let replicas = match scale.pointer("/spec/replicas") {
        None | Some(Value::Null) => 0,
        Some(v) => v.as_i64().ok_or_else(|| {
            ApiError::invalid(
                def,
                &name,
                &[(
                    "spec.replicas".into(),
                    "Invalid value: must be an integer".into(),
                )],
            )
        })?,
    };
    if replicas < 0 {
        return Err(ApiError::invalid(
            def,
            &name,
            &[(
                "spec.replicas".into(),
                format!("Invalid value: {replicas}: must be greater than or equal to 0"),
            )],
        ));
    }
    let mut new = old.clone();
    set_at(&mut new, "/spec/replicas", json!(replicas));
    let out = commit_update(st, def, old, new, dry)?;
    Ok(scale_of(&out))
}

/// PUT on an object or its `status` / `scale` subresource.
///
/// # Errors
/// 404, 400 (name mismatch), 409 Conflict (stale `resourceVersion`), 422.
pub fn update(
    st: &mut State,
    def: &'static ResourceDef,
    ns: &str,
    name: &str,
    sub: Option<&str>,
    body: Value,
    dry: bool,
) -> Result<Value, ApiError> {
    let old = st
        .get(def.plural, ns, name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(def, name))?;
    if sub == Some("scale") {
        return apply_scale(st, def, &old, &body, dry);
    }
    let body_name = str_at(&body, "/metadata/name");
    if !body_name.is_empty() && body_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    check_rv(def, &old, &body, name)?;
    let new = merge_for_sub(def, &old, body, sub);
    commit_update(st, def, &old, new, dry)
}

/// The object to store when `incoming` is written to the main resource or to `/status`.
fn merge_for_sub(def: &ResourceDef, old: &Value, mut incoming: Value, sub: Option<&str>) -> Value {
    if sub == Some("status") {
        let mut new = old.clone();
        set_at(
            &mut new,
            "/status",
            incoming.get("status").cloned().unwrap_or(json!({})),
        );
        return new;
    }
    if sub == Some("ephemeralcontainers") {
        // Only the ephemeral containers change through this subresource (`kubectl debug`).
        let mut new = old.clone();
        set_at(
            &mut new,
            "/spec/ephemeralContainers",
            incoming
                .pointer("/spec/ephemeralContainers")
                .cloned()
                .unwrap_or(json!([])),
        );
        return new;
    }
    carry_over(def, old, &mut incoming);
    incoming
}

/// PATCH on an object or a subresource; `apply-patch+yaml` creates when absent.
/// Returns the HTTP code (201 when server-side apply created the object) and the result.
///
/// # Errors
/// 404, 400 (malformed patch), 409 Conflict, 422.
#[allow(clippy::too_many_arguments)]
pub fn patch(
    st: &mut State,
    def: &'static ResourceDef,
    ns: &str,
    name: &str,
    sub: Option<&str>,
    pt: PatchType,
    body: &[u8],
    dry: bool,
) -> Result<(u16, Value), ApiError> {
    if def.custom && pt == PatchType::Strategic {
        return Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
        ));
    }
    let Some(old) = st.get(def.plural, ns, name).cloned() else {
        if pt == PatchType::Apply && sub.is_none() {
            let obj: Value = serde_yaml::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("invalid apply patch: {e}")))?;
            let ns = if def.namespaced { Some(ns) } else { None };
            let mut obj = obj;
            set_at(&mut obj, "/metadata/name", json!(name));
            return create(st, def, ns, obj, dry).map(|o| (201, o));
        }
        return Err(ApiError::not_found(def, name));
    };
    if sub == Some("scale") {
        let base = scale_of(&old);
        let patched = patch::apply(pt, &base, body).map_err(ApiError::bad_request)?;
        return apply_scale(st, def, &old, &patched, dry).map(|s| (200, s));
    }
    let patched = patch::apply(pt, &old, body).map_err(|e| {
        if pt == PatchType::Json {
            ApiError::new(
                422,
                "Invalid",
                format!("the server rejected our request due to an error in our request: {e}"),
            )
        } else {
            ApiError::bad_request(e)
        }
    })?;
    check_rv(def, &old, &patched, name)?;
    let new = merge_for_sub(def, &old, patched, sub);
    commit_update(st, def, &old, new, dry).map(|o| (200, o))
}

/// Options of a DELETE, from its `DeleteOptions` body and query parameters.
#[derive(Debug, Default, Clone)]
pub struct DeleteOpts {
    pub grace_seconds: Option<i64>,
    pub propagation: Option<String>,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
    /// `dryRun: ["All"]` in the body (kubectl sends it there rather than in the query).
    pub dry_run: bool,
}

impl DeleteOpts {
    /// # Errors
    /// 400 when the body is present but not a JSON object.
    pub fn parse(body: &[u8], q: &HashMap<String, String>) -> Result<Self, ApiError> {
        let mut o = DeleteOpts::default();
        if !body.is_empty() {
            let v: Value = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?;
            o.grace_seconds = v.get("gracePeriodSeconds").and_then(Value::as_i64);
            o.dry_run = v
                .get("dryRun")
                .and_then(Value::as_array)
                .is_some_and(|a| a.iter().any(|x| x == "All"));
            o.propagation = v
                .get("propagationPolicy")
                .and_then(Value::as_str)
                .map(str::to_string);
            if v.get("orphanDependents") == Some(&json!(true)) {
                o.propagation = Some("Orphan".into());
            }
            o.precondition_uid = v
                .pointer("/preconditions/uid")
                .and_then(Value::as_str)
                .map(str::to_string);
            o.precondition_rv = v
                .pointer("/preconditions/resourceVersion")
                .and_then(Value::as_str)
                .map(str::to_string);
        }
        if let Some(g) = q.get("gracePeriodSeconds").and_then(|g| g.parse().ok()) {
            o.grace_seconds = Some(g);
        }
        if let Some(p) = q.get("propagationPolicy") {
            o.propagation = Some(p.clone());
        }
        Ok(o)
    }
}

/// Deletes an object. Pods on a node terminate gracefully (the kubelet removes them after
/// the grace period); `Foreground` waits for dependents; `Orphan` strips owner references;
/// `Background` (default) removes at once and leaves dependents to the garbage collector.
///
/// # Errors
/// 404, 409 on a failed precondition.
pub fn delete(
    st: &mut State,
    def: &'static ResourceDef,
    ns: &str,
    name: &str,
    opts: &DeleteOpts,
    dry: bool,
) -> Result<Value, ApiError> {
    let old = st
        .get(def.plural, ns, name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(def, name))?;
    if let Some(uid) = &opts.precondition_uid {
        if uid != str_at(&old, "/metadata/uid") {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    str_at(&old, "/metadata/uid")
                ),
            ));
        }
    }
    if let Some(rv) = &opts.precondition_rv {
        if rv != str_at(&old, "/metadata/resourceVersion") {
            return Err(ApiError::conflict(def, name));
        }
    }
    if dry {
        return Ok(deleted_answer(def, &old));
    }
    let terminating = old.pointer("/metadata/deletionTimestamp").is_some();
    if def.kind == "Pod" {
        let grace = opts
            .grace_seconds
            .unwrap_or_else(|| int_at(&old, "/spec/terminationGracePeriodSeconds", 30))
            .clamp(0, MAX_GRACE_SECONDS);
        let phase = str_at(&old, "/status/phase");
        if grace == 0
            || str_at(&old, "/spec/nodeName").is_empty()
            || phase == "Succeeded"
            || phase == "Failed"
        {
            let out = st
                .remove(def, ns, name)
                .map(|a| (*a).clone())
                .unwrap_or_default();
            return Ok(out);
        }
        if terminating {
            return Ok((*old).clone());
        }
        let mut new = (*old).clone();
        let at = chrono::Utc::now() + chrono::Duration::seconds(grace);
        set_at(
            &mut new,
            "/metadata/deletionTimestamp",
            json!(at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        );
        set_at(
            &mut new,
            "/metadata/deletionGracePeriodSeconds",
            json!(grace),
        );
        return Ok((*st.replace(def, new)).clone());
    }
    if def.kind == "Namespace" {
        if terminating {
            return Ok((*old).clone());
        }
        let mut new = (*old).clone();
        set_at(&mut new, "/metadata/deletionTimestamp", json!(now_str()));
        set_at(&mut new, "/status/phase", json!("Terminating"));
        return Ok((*st.replace(def, new)).clone());
    }
    let has_finalizers = old
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty());
    let policy = opts.propagation.as_deref().unwrap_or("Background");
    if policy == "Orphan" {
        orphan_dependents(st, str_at(&old, "/metadata/uid"));
    }
    if policy == "Foreground" || has_finalizers {
        if terminating {
            return Ok((*old).clone());
        }
        let mut new = (*old).clone();
        set_at(&mut new, "/metadata/deletionTimestamp", json!(now_str()));
        set_at(&mut new, "/metadata/deletionGracePeriodSeconds", json!(0));
        if policy == "Foreground" {
            let mut fins: Vec<Value> = new
                .pointer("/metadata/finalizers")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if !fins.contains(&json!("foregroundDeletion")) {
                fins.push(json!("foregroundDeletion"));
            }
            set_at(&mut new, "/metadata/finalizers", json!(fins));
        }
        return Ok((*st.replace(def, new)).clone());
    }
    let removed = st.remove(def, ns, name).unwrap_or(old);
    after_write(st, def);
    Ok(deleted_answer(def, &removed))
}

/// Kinds whose registry answers an immediate DELETE with the deleted object
/// (`ReturnDeletedObject`); every other kind answers with a `Status`.
const RETURNS_DELETED_OBJECT: &[&str] = &["Pod", "Service"];

/// What an immediate DELETE answers: the object for [`RETURNS_DELETED_OBJECT`] kinds, else
/// a `Status` naming it, as the API server's generic registry does.
fn deleted_answer(def: &ResourceDef, object: &Value) -> Value {
    if RETURNS_DELETED_OBJECT.contains(&def.kind) {
        return object.clone();
    }
    super::errors::success_status(
        200,
        Some(json!({
            "name": str_at(object, "/metadata/name"),
            "group": def.group,
            "kind": def.plural,
            "uid": str_at(object, "/metadata/uid"),
        })),
    )
}

/// Removes owner references to `uid` from every object (the `Orphan` propagation policy).
fn orphan_dependents(st: &mut State, uid: &str) {
    for def in st.defs() {
        for obj in st.list(def.plural, None) {
            let Some(refs) = obj
                .pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
            else {
                continue;
            };
            if !refs.iter().any(|r| str_at(r, "/uid") == uid) {
                continue;
            }
            let kept: Vec<Value> = refs
                .iter()
                .filter(|r| str_at(r, "/uid") != uid)
                .cloned()
                .collect();
            let mut new = (*obj).clone();
            set_at(&mut new, "/metadata/ownerReferences", json!(kept));
            st.replace(def, new);
        }
    }
}

/// The eviction subresource: deletes the pod unless a PodDisruptionBudget forbids it.
///
/// # Errors
/// 404 for a missing pod, 429 TooManyRequests when the budget allows no disruption, 500
/// when several budgets select the pod (as the real API).
pub fn evict(
    st: &mut State,
    ns: &str,
    name: &str,
    eviction: &Value,
    dry: bool,
) -> Result<(), ApiError> {
    let pods = by_plural("pods").ok_or_else(|| ApiError::internal("no pods"))?;
    let pod = st
        .get("pods", ns, name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(pods, name))?;
    if pod.pointer("/metadata/deletionTimestamp").is_some() {
        return Ok(());
    }
    let pdbs: Vec<_> = st
        .list("poddisruptionbudgets", Some(ns))
        .into_iter()
        .filter(|p| LabelSelector::from_json(p.pointer("/spec/selector")).matches_obj(&pod))
        .collect();
    if pdbs.len() > 1 {
        return Err(ApiError::internal(
            "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
        ));
    }
    if let Some(pdb) = pdbs.first() {
        let n = disruption::budget(st, pdb);
        let healthy_pod = kubelet::is_ready(&pod);
        let allowed = if !healthy_pod && n.current_healthy >= n.desired_healthy {
            true
        } else {
            n.disruptions_allowed > 0
        };
        if !allowed {
            let mut err = ApiError::new(
                429,
                "TooManyRequests",
                "Cannot evict pod as it would violate the pod's disruption budget.",
            );
            err.details = Some(json!({"causes": [{
                "reason": "DisruptionBudget",
                "message": format!(
                    "The disruption budget {} needs {} healthy pods and has {} currently",
                    str_at(pdb, "/metadata/name"), n.desired_healthy, n.current_healthy
                ),
            }]}));
            return Err(err);
        }
        if !dry && healthy_pod {
            let pdef =
                by_plural("poddisruptionbudgets").ok_or_else(|| ApiError::internal("no pdbs"))?;
            let mut new = (**pdb).clone();
            set_at(
                &mut new,
                "/status/disruptionsAllowed",
                json!((n.disruptions_allowed - 1).max(0)),
            );
            set_at(
                &mut new,
                &format!("/status/disruptedPods/{name}"),
                json!(now_str()),
            );
            st.replace(pdef, new);
        }
    }
    if dry {
        return Ok(());
    }
    let opts = DeleteOpts {
        grace_seconds: eviction
            .pointer("/deleteOptions/gracePeriodSeconds")
            .and_then(Value::as_i64),
        ..Default::default()
    };
    delete(st, pods, ns, name, &opts, false)?;
    Ok(())
}

/// `pods/log`: the simulated container output, honouring `container`, `tailLines`,
/// `previous` and `limitBytes`.
///
/// # Errors
/// 404 for a missing pod; 400 for a wrong or missing container name, or a container that
/// has not started.
pub fn pod_log(
    st: &State,
    ns: &str,
    name: &str,
    q: &HashMap<String, String>,
) -> Result<String, ApiError> {
    let pods = by_plural("pods").ok_or_else(|| ApiError::internal("no pods"))?;
    let pod = st
        .get("pods", ns, name)
        .ok_or_else(|| ApiError::not_found(pods, name))?;
    let containers: Vec<String> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|cs| cs.iter().map(|c| str_at(c, "/name").to_string()).collect())
        .unwrap_or_default();
    let ephemeral: Vec<String> = pod
        .pointer("/spec/ephemeralContainers")
        .and_then(Value::as_array)
        .map(|cs| cs.iter().map(|c| str_at(c, "/name").to_string()).collect())
        .unwrap_or_default();
    if let Some(c) = q.get("container").filter(|c| ephemeral.contains(c)) {
        return kubelet::ephemeral_log(pod, c).map_err(ApiError::bad_request);
    }
    let container = match q.get("container") {
        Some(c) if !c.is_empty() => c.clone(),
        _ if containers.len() == 1 => containers[0].clone(),
        _ => {
            return Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            )))
        }
    };
    if !containers.contains(&container) {
        return Err(ApiError::bad_request(format!(
            "container {container} is not valid for pod {name}"
        )));
    }
    if pod.pointer("/status/startTime").is_none() {
        return Err(ApiError::bad_request(format!(
            "container \"{container}\" in pod \"{name}\" is waiting to start: ContainerCreating"
        )));
    }
    let previous = q.get("previous").is_some_and(|v| v == "true");
    let mut lines =
        kubelet::log_lines(pod, &container, previous, st.speed).map_err(ApiError::bad_request)?;
    if let Some(n) = q.get("tailLines").and_then(|t| t.parse::<usize>().ok()) {
        let skip = lines.len().saturating_sub(n);
        lines.drain(..skip);
    }
    let mut text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    if let Some(n) = q.get("limitBytes").and_then(|t| t.parse::<usize>().ok()) {
        while text.len() > n {
            text.pop();
        }
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::controllers::tick_once;
    use crate::sim::scenario::{mk_deployment, mk_namespace, mk_node, mk_pdb, PdbLimit};

    fn seeded(objs: Vec<Value>) -> State {
        let mut st = State::new(1000.0);
        for o in objs {
            let def = crate::sim::resources::by_kind(str_at(&o, "/kind")).unwrap();
            let ns = str_at(&o, "/metadata/namespace").to_string();
            let ns = if def.namespaced {
                Some(ns.as_str())
            } else {
                None
            };
            create(&mut st, def, ns, o.clone(), false).unwrap();
        }
        for _ in 0..200 {
            tick_once(&mut st);
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        st
    }

    #[test]
    fn a_second_eviction_waits_for_the_first_replacement() {
        let mut st = seeded(vec![
            mk_namespace("default"),
            mk_node("node-1"),
            mk_deployment("default", "web", 3, "nginx:1.25"),
            mk_pdb("default", "web-pdb", "web", PdbLimit::MaxUnavailable(1)),
        ]);
        let names: Vec<String> = st
            .list("pods", Some("default"))
            .iter()
            .map(|p| str_at(p, "/metadata/name").to_string())
            .collect();
        assert_eq!(names.len(), 3);
        evict(&mut st, "default", &names[0], &json!({}), false).unwrap();
        let err = evict(&mut st, "default", &names[1], &json!({}), false).unwrap_err();
        assert_eq!(err.code, 429);
    }
}
