//! The HTTP edge: one axum fallback handler that parses Kubernetes REST paths and dispatches
//! to the verbs in [`super::api`]. Watches stream newline-delimited JSON events.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State as AxState};
use axum::response::{IntoResponse, Response};
use axum::Router;
use http::{HeaderMap, Method, StatusCode};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::api::{self, DeleteOpts};
use super::auth::{self, User};
use super::crd::{self, CustomType};
use super::discovery;
use super::errors::{success_status, ApiError};
use super::faults::Faults;
use super::metrics;
use super::patch::PatchType;
use super::proto;
use super::rbac::{self, Attrs};
use super::resources::ResourceDef;
use super::selectors::{FieldSelector, LabelSelector};
use super::store::{key_of, str_at, EventType, State, WatchEvent};
use super::table;
use super::writes::{Write, Writes};

/// Largest request body accepted (the real server's limit is 3 MiB per object).
const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
/// How often a watch with `allowWatchBookmarks` gets a BOOKMARK (the real server: ~1 min).
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(15);
/// Watch lifetime when the client gives no `timeoutSeconds` (the real server: 30–60 min).
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Shared by the HTTP handler and the controllers.
pub struct Sim {
    pub state: Mutex<State>,
    pub faults: Faults,
    pub writes: Writes,
    pub shutdown: CancellationToken,
    pub addr: std::net::SocketAddr,
}

impl Sim {
    /// Locks the state; a poisoned lock (a panic elsewhere) is recovered, never propagated.
    pub fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub fn router(sim: Arc<Sim>) -> Router {
    Router::new().fallback(handle).with_state(sim)
}

fn json_response(code: u16, body: Vec<u8>) -> Response {
    let code = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
    (
        code,
        [(http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

fn value_response(code: u16, v: &Value) -> Response {
    json_response(code, serde_json::to_vec(v).unwrap_or_default())
}

/// The resource a request addresses.
struct Target {
    def: &'static ResourceDef,
    ns: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

/// Parses `/api/v1/...` or `/apis/G/V/...` past the group-version into a [`Target`].
fn parse_target(st: &State, group: &str, version: &str, rest: &[&str]) -> Result<Target, ApiError> {
    let lookup = |g: &str, v: &str, p: &str| st.lookup(g, v, p);
    let not_found = || {
        ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    };
    let (ns, plural, name, sub) = if rest.len() >= 3
        && rest[0] == "namespaces"
        && lookup(group, version, rest[2]).is_some_and(|d| d.namespaced)
    {
        (
            Some(rest[1].to_string()),
            rest[2],
            rest.get(3).map(|s| s.to_string()),
            rest.get(4).map(|s| s.to_string()),
        )
    } else {
        (
            None,
            *rest.first().ok_or_else(not_found)?,
            rest.get(1).map(|s| s.to_string()),
            rest.get(2).map(|s| s.to_string()),
        )
    };
    let extra = if ns.is_some() {
        rest.len() > 5
    } else {
        rest.len() > 3
    };
    let def = lookup(group, version, plural).ok_or_else(not_found)?;
    if extra {
        return Err(not_found());
    }
    if let Some(s) = &sub {
        if !def.has_sub(s) {
            return Err(not_found());
        }
    }
    Ok(Target { def, ns, name, sub })
}

fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.split(',').next().unwrap_or("").contains("as=Table"))
}

fn is_dry_run(q: &HashMap<String, String>) -> bool {
    q.get("dryRun").is_some_and(|v| v == "All")
}

/// Whether a write asks for a dry run where the server honours it: the query, a delete's
/// `DeleteOptions` body (where kubectl and kube-rs put it) or an eviction's `deleteOptions`.
/// What the record of writes says, so it agrees with what the server did.
fn asks_dry_run(verb: &str, sub: Option<&str>, q: &HashMap<String, String>, body: &[u8]) -> bool {
    let in_body = match (verb, sub) {
        ("delete" | "deletecollection", None) => "/dryRun",
        ("create", Some("eviction")) => "/deleteOptions/dryRun",
        _ => return is_dry_run(q),
    };
    let says_all = |v: Value| {
        v.pointer(in_body)
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|x| x == "All"))
    };
    is_dry_run(q) || serde_json::from_slice(body).is_ok_and(says_all)
}

fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request("the body of the request was empty"));
    }
    let v: Value = serde_json::from_slice(body)
        .or_else(|_| serde_yaml::from_slice(body))
        .map_err(|e| ApiError::bad_request(format!("the object provided is unrecognized: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "the object provided is not an object",
        ));
    }
    Ok(v)
}

async fn handle(AxState(sim): AxState<Arc<Sim>>, req: Request) -> Response {
    let started = std::time::Instant::now();
    let started_at = chrono::Utc::now();
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(b) => b,
        Err(e) => return ApiError::bad_request(format!("reading body: {e}")).into_response(),
    };
    let query: HashMap<String, String> = Query::try_from_uri(&parts.uri)
        .map(|Query(q)| q)
        .unwrap_or_default();
    let path = parts.uri.path().trim_end_matches('/').to_string();
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let user = match authenticate(&sim, &parts, &path, &query) {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    let defs = sim.lock().served_defs();
    let defs = defs.as_slice();
    match segs.as_slice() {
        [] => return value_response(200, &discovery::root_paths(defs)),
        ["version"] => return value_response(200, &discovery::version()),
        ["healthz"] | ["livez"] | ["readyz"] => return "ok".into_response(),
        // Not Kubernetes: the simulated cluster's record of client writes, for tests and
        // people checking what a client did (see `sim::writes`).
        ["sim", "v1", "writes"] => {
            let writes: Vec<Value> = sim.writes.all().iter().map(Write::to_json).collect();
            return value_response(
                200,
                &json!({ "writes": writes, "dropped": sim.writes.dropped() }),
            );
        }
        ["api"] => return value_response(200, &discovery::core_versions(sim.addr)),
        ["apis"] => return value_response(200, &discovery::group_list(defs)),
        ["api", "v1"] => return value_response(200, &discovery::resource_list(defs, "", "v1")),
        ["apis", metrics::GROUP] => return value_response(200, &metrics::group()),
        ["apis", g] => {
            return match discovery::group(defs, g) {
                Some(v) => value_response(200, &v),
                None => ApiError::new(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                )
                .into_response(),
            }
        }
        ["openapi", "v3"] => return value_response(200, &discovery::openapi_v3_root(defs)),
        ["openapi", "v3", "api", v] | ["openapi", "v3", "apis", "", v] => {
            if let Some(doc) = discovery::openapi_v3_doc(defs, "", v) {
                return value_response(200, &doc);
            }
        }
        ["openapi", "v3", "apis", g, v] => {
            if let Some(doc) = discovery::openapi_v3_doc(defs, g, v) {
                return value_response(200, &doc);
            }
        }
        ["apis", g, v] if discovery::serves(defs, g, v) => {
            return value_response(200, &discovery::resource_list(defs, g, v))
        }
        // The resource metrics API, computed on every read (`metrics.rs`).
        ["apis", metrics::GROUP, metrics::VERSION, rest @ ..] => {
            let selector = query.get("labelSelector").map_or("", String::as_str);
            let st = sim.lock();
            let answer = match rest {
                [] => Ok(metrics::resource_list()),
                ["pods"] => metrics::pods(&st, None, None, selector),
                ["namespaces", ns, "pods"] => metrics::pods(&st, Some(ns), None, selector),
                ["namespaces", ns, "pods", name] => {
                    metrics::pods(&st, Some(ns), Some(name), selector)
                }
                ["nodes"] => metrics::nodes(&st, None),
                ["nodes", name] => metrics::nodes(&st, Some(name)),
                _ => Err(ApiError::new(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                )),
            };
            return match answer {
                Ok(v) => value_response(200, &v),
                Err(e) => e.into_response(),
            };
        }
        _ => {}
    }
    let target = match segs.as_slice() {
        ["api", "v1", rest @ ..] => parse_target(&sim.lock(), "", "v1", rest),
        ["apis", g, v, rest @ ..] => parse_target(&sim.lock(), g, v, rest),
        _ => Err(ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )),
    };
    let target = match target {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    let watching = query.get("watch").is_some_and(|w| w == "true" || w == "1");
    let verb = match (&parts.method, target.name.is_some(), target.sub.as_deref()) {
        (&Method::GET, false, _) if watching => "watch",
        (&Method::GET, false, _) => "list",
        (&Method::GET, true, _) => "get",
        (&Method::POST, true, Some("eviction" | "token")) => "create",
        (&Method::POST, false, _) => "create",
        (&Method::PUT, true, _) => "update",
        (&Method::PATCH, true, _) => "patch",
        (&Method::DELETE, true, _) => "delete",
        (&Method::DELETE, false, _) => "deletecollection",
        _ => {
            return ApiError::method_not_allowed(
                "the server does not allow this method on the requested resource",
            )
            .into_response()
        }
    };
    let fault_res = match &target.sub {
        Some(s) => format!("{}/{}", target.def.plural, s),
        None => target.def.plural.to_string(),
    };
    let write = matches!(
        verb,
        "create" | "update" | "patch" | "delete" | "deletecollection"
    )
    .then(|| Write {
        verb,
        resource: fault_res.clone(),
        namespace: namespace_of(&target).to_string(),
        name: target.name.clone().unwrap_or_default(),
        dry_run: asks_dry_run(verb, target.sub.as_deref(), &query, &body),
        user: user.name.clone(),
        status: 0,
        started,
        finished: started,
        started_at,
        finished_at: started_at,
        body: Write::body_prefix(&body),
    });
    let response = respond(&sim, verb, target, &fault_res, &parts, &query, &body, &user).await;
    if let Some(write) = write {
        sim.writes.record(Write {
            status: response.status().as_u16(),
            finished: std::time::Instant::now(),
            finished_at: chrono::Utc::now(),
            ..write
        });
    }
    response
}

/// Authentication, impersonation and authorization of a request, in the API server's order:
/// the user it acts as, or the `401`/`403` to answer.
fn authenticate(
    sim: &Sim,
    parts: &http::request::Parts,
    path: &str,
    query: &HashMap<String, String>,
) -> Result<User, ApiError> {
    let credentials = parts.headers.contains_key(http::header::AUTHORIZATION);
    if !credentials && !auth::impersonates(&parts.headers) {
        return Ok(User::admin());
    }
    let st = sim.lock();
    let user = auth::authenticate(&st, &parts.headers)?;
    let user = auth::impersonate(&st, user, &parts.headers)?;
    if !user.is_master() {
        let path = if path.is_empty() { "/" } else { path };
        rbac::check(&st, &Attrs::of_request(&user, &parts.method, path, query))?;
    }
    Ok(user)
}

/// Serves a request whose resource and verb are known: injected faults first, then the verb.
/// A watch suffers its fault here, when it is opened, like any other request.
#[allow(clippy::too_many_arguments)]
async fn respond(
    sim: &Arc<Sim>,
    verb: &'static str,
    target: Target,
    fault_res: &str,
    parts: &http::request::Parts,
    query: &HashMap<String, String>,
    body: &Bytes,
    user: &User,
) -> Response {
    let injected = sim.faults.check(verb, fault_res);
    if !injected.latency.is_zero() {
        tokio::time::sleep(injected.latency).await;
    }
    let name = target.name.as_deref().unwrap_or("");
    if let Some(err) = injected.error(target.def, fault_res, verb, namespace_of(&target), name) {
        return err.into_response();
    }
    // kubectl's typed clients send TokenRequests and access reviews as protobuf.
    let mut decoded: Option<Bytes> = None;
    if let Some(ct) = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    {
        if ct.contains("protobuf") && verb == "create" {
            decoded = proto::decode(body).map(|v| Bytes::from(v.to_string()));
        }
        if decoded.is_none() && (ct.contains("protobuf") || ct.contains("cbor")) {
            // Clients that prefer binary encodings fall back to JSON on 415.
            return ApiError::new(
                415,
                "UnsupportedMediaType",
                format!("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/merge-patch+json, application/json-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml; got {ct}"),
            )
            .into_response();
        }
    }
    let table = wants_table(&parts.headers);
    if verb == "get"
        && target.sub.as_deref() == Some("log")
        && query.get("follow").is_some_and(|f| f == "true")
    {
        return follow_logs(sim.clone(), &target, query);
    }
    if verb == "watch" {
        return watch(sim.clone(), target, query, table);
    }
    let ct = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .filter(|_| decoded.is_none())
        .unwrap_or("application/json")
        .to_string();
    let body = decoded.as_ref().unwrap_or(body);
    // The field manager a write is recorded under: the request's, else the client's name
    // from its User-Agent, as the API server derives it.
    let agent = parts
        .headers
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .and_then(|ua| ua.split('/').next())
        .filter(|a| !a.is_empty())
        .unwrap_or("unknown")
        .to_string();
    let manager = query.get("fieldManager").cloned().unwrap_or(agent);
    match serve(sim, verb, &target, query, &ct, body, table, &manager, user) {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

fn namespace_of(t: &Target) -> &str {
    if t.def.namespaced {
        t.ns.as_deref().unwrap_or("")
    } else {
        ""
    }
}

#[allow(clippy::too_many_arguments)]
fn serve(
    sim: &Sim,
    verb: &str,
    t: &Target,
    q: &HashMap<String, String>,
    ct: &str,
    body: &Bytes,
    table: bool,
    manager: &str,
    user: &User,
) -> Result<Response, ApiError> {
    let def = t.def;
    let writer = |operation: &'static str| api::Writer {
        manager: manager.to_string(),
        operation,
        subresource: t.sub.clone().unwrap_or_default(),
        strict: q.get("fieldValidation").is_some_and(|v| v == "Strict"),
    };
    let ns = namespace_of(t);
    let name = t.name.as_deref().unwrap_or("");
    let dry = is_dry_run(q);
    let sub = t.sub.as_deref();
    if sub.is_none() && !def.verbs.contains(&verb) {
        return Err(ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource",
        ));
    }
    if def.namespaced && t.ns.is_none() && !matches!(verb, "list" | "deletecollection") {
        return Err(ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ));
    }
    match (verb, sub) {
        ("list", _) => {
            let label = LabelSelector::parse(q.get("labelSelector").map_or("", String::as_str))
                .map_err(ApiError::bad_request)?;
            let field = FieldSelector::parse(q.get("fieldSelector").map_or("", String::as_str))
                .map_err(ApiError::bad_request)?;
            let st = sim.lock();
            let items: Vec<Arc<Value>> = match field.equality("metadata.name") {
                Some(n) if t.ns.is_some() || !def.namespaced => {
                    st.get(def.plural, ns, n).cloned().into_iter().collect()
                }
                _ => st.list(def.plural, t.ns.as_deref()),
            };
            let rv = st.rv();
            let custom = st.custom_type(def).cloned();
            drop(st);
            let items: Vec<Arc<Value>> = items
                .into_iter()
                .filter(|o| label.matches_obj(o) && field.matches(o))
                .collect();
            if table {
                return Ok(value_response(
                    200,
                    &render_table(custom.as_ref(), def, &items, rv),
                ));
            }
            Ok(json_response(200, list_bytes(def, &items, rv)))
        }
        ("get", None) => {
            let st = sim.lock();
            let obj = st
                .get(def.plural, ns, name)
                .cloned()
                .ok_or_else(|| ApiError::not_found(def, name))?;
            let rv = st.rv();
            let custom = st.custom_type(def).cloned();
            drop(st);
            if table {
                return Ok(value_response(
                    200,
                    &render_table(custom.as_ref(), def, &[obj], rv),
                ));
            }
            Ok(value_response(200, &crd::present(def, &obj)))
        }
        ("get", Some("status" | "ephemeralcontainers")) => {
            let st = sim.lock();
            let obj = st
                .get(def.plural, ns, name)
                .cloned()
                .ok_or_else(|| ApiError::not_found(def, name))?;
            Ok(value_response(200, &crd::present(def, &obj)))
        }
        ("get", Some("scale")) => {
            let st = sim.lock();
            let obj = st
                .get(def.plural, ns, name)
                .ok_or_else(|| ApiError::not_found(def, name))?;
            Ok(value_response(200, &api::scale_of(obj)))
        }
        ("get", Some("log")) => {
            let st = sim.lock();
            let text = api::pod_log(&st, ns, name, q)?;
            Ok((
                StatusCode::OK,
                [(http::header::CONTENT_TYPE, "text/plain")],
                text,
            )
                .into_response())
        }
        ("create", None)
            if matches!(
                def.kind,
                "SubjectAccessReview"
                    | "SelfSubjectAccessReview"
                    | "LocalSubjectAccessReview"
                    | "SelfSubjectReview"
            ) =>
        {
            let review = parse_body(body)?;
            let st = sim.lock();
            Ok(value_response(
                201,
                &rbac::review(&st, def.kind, ns, review, user)?,
            ))
        }
        ("create", None) => {
            let obj = parse_body(body)?;
            let mut st = sim.lock();
            st.writer = Some(writer("Update"));
            let created = api::create(&mut st, def, t.ns.as_deref(), obj, dry);
            st.writer = None;
            Ok(value_response(201, &crd::present(def, &created?)))
        }
        ("create", Some("token")) => {
            let request = parse_body(body)?;
            let mut st = sim.lock();
            Ok(value_response(
                201,
                &auth::token_request(&mut st, ns, name, &request, dry)?,
            ))
        }
        ("create", Some("eviction")) => {
            let ev = parse_body(body)?;
            let dry = dry
                || ev
                    .pointer("/deleteOptions/dryRun")
                    .and_then(Value::as_array)
                    .is_some_and(|a| a.iter().any(|x| x == "All"));
            let mut st = sim.lock();
            api::evict(&mut st, ns, name, &ev, dry)?;
            Ok(value_response(201, &success_status(201, None)))
        }
        ("update", _) => {
            let obj = parse_body(body)?;
            let mut st = sim.lock();
            st.writer = Some(writer("Update"));
            let out = api::update(&mut st, def, ns, name, sub, obj, dry);
            st.writer = None;
            Ok(value_response(200, &crd::present(def, &out?)))
        }
        ("patch", _) => {
            let pt = PatchType::from_content_type(ct).ok_or_else(|| {
                ApiError::new(
                    415,
                    "UnsupportedMediaType",
                    format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json; got {ct}"),
                )
            })?;
            let mut st = sim.lock();
            let operation = if ct.contains("apply-patch") {
                "Apply"
            } else {
                "Update"
            };
            st.writer = Some(writer(operation));
            let patched = api::patch(&mut st, def, ns, name, sub, pt, body, dry);
            st.writer = None;
            let (code, out) = patched?;
            Ok(value_response(code, &crd::present(def, &out)))
        }
        ("delete", None) => {
            let opts = DeleteOpts::parse(body, q)?;
            let mut st = sim.lock();
            let out = api::delete(&mut st, def, ns, name, &opts, dry || opts.dry_run)?;
            Ok(value_response(200, &out))
        }
        ("deletecollection", None) => {
            let opts = DeleteOpts::parse(body, q)?;
            let label = LabelSelector::parse(q.get("labelSelector").map_or("", String::as_str))
                .map_err(ApiError::bad_request)?;
            let field = FieldSelector::parse(q.get("fieldSelector").map_or("", String::as_str))
                .map_err(ApiError::bad_request)?;
            let mut st = sim.lock();
            let victims: Vec<Arc<Value>> = st
                .list(def.plural, t.ns.as_deref())
                .into_iter()
                .filter(|o| label.matches_obj(o) && field.matches(o))
                .collect();
            let mut out = Vec::new();
            for v in victims {
                let (ons, oname) = key_of(&v);
                if let Ok(o) = api::delete(&mut st, def, &ons, &oname, &opts, dry || opts.dry_run) {
                    out.push(Arc::new(o));
                }
            }
            let rv = st.rv();
            Ok(json_response(200, list_bytes(def, &out, rv)))
        }
        _ => Err(ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource",
        )),
    }
}

/// A `kubectl get` table: a custom type's printer columns, or the built-in columns.
fn render_table(
    custom: Option<&CustomType>,
    def: &ResourceDef,
    items: &[Arc<Value>],
    rv: u64,
) -> Value {
    match custom {
        Some(c) => crd::table(c, def, items, rv),
        None => table::table(def, items, rv),
    }
}

/// `{"kind":"PodList",...,"items":[...]}` written straight from the stored objects.
fn list_bytes(def: &ResourceDef, items: &[Arc<Value>], rv: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + items.len() * 1024);
    out.extend_from_slice(
        format!(
            "{{\"kind\":\"{}List\",\"apiVersion\":\"{}\",\"metadata\":{{\"resourceVersion\":\"{}\"}},\"items\":[",
            def.kind,
            def.api_version(),
            rv
        )
        .as_bytes(),
    );
    for (i, it) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        if def.custom {
            let _ = serde_json::to_writer(&mut out, &crd::present(def, it));
        } else {
            let _ = serde_json::to_writer(&mut out, &**it);
        }
    }
    out.extend_from_slice(b"]}");
    out
}

fn event_line(etype: &str, obj: &Value) -> Bytes {
    let mut out = Vec::with_capacity(1024);
    out.extend_from_slice(format!("{{\"type\":\"{etype}\",\"object\":").as_bytes());
    let _ = serde_json::to_writer(&mut out, obj);
    out.extend_from_slice(b"}\n");
    Bytes::from(out)
}

fn bookmark(def: &ResourceDef, rv: u64, initial_end: bool) -> Bytes {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    event_line(
        "BOOKMARK",
        &json!({"kind": def.kind, "apiVersion": def.api_version(), "metadata": meta}),
    )
}

/// How often a followed log is re-read, in simulated seconds.
const LOG_FOLLOW_SECS: f64 = 5.0;

/// `pods/log?follow=true`: the log so far, then new lines as the container writes them,
/// until the pod goes away, the server shuts down or the client hangs up.
fn follow_logs(sim: Arc<Sim>, t: &Target, q: &HashMap<String, String>) -> Response {
    let ns = namespace_of(t).to_string();
    let name = t.name.clone().unwrap_or_default();
    let mut whole = q.clone();
    whole.remove("tailLines");
    whole.remove("limitBytes");
    let (first, mut sent, speed) = {
        let st = sim.lock();
        let first = match api::pod_log(&st, &ns, &name, q) {
            Ok(text) => text,
            Err(e) => return e.into_response(),
        };
        let sent = api::pod_log(&st, &ns, &name, &whole).map_or(0, |t| t.lines().count());
        (first, sent, st.speed)
    };
    let every = Duration::from_secs_f64((LOG_FOLLOW_SECS / speed).max(0.05));
    let shutdown = sim.shutdown.clone();
    let stream = async_stream::stream! {
        yield Ok::<Bytes, std::io::Error>(Bytes::from(first));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(every) => {}
            }
            let next = {
                let st = sim.lock();
                api::pod_log(&st, &ns, &name, &whole)
            };
            let Ok(text) = next else { break };
            let lines: Vec<&str> = text.lines().collect();
            if lines.len() > sent {
                let mut chunk = lines[sent..].join("\n");
                chunk.push('\n');
                sent = lines.len();
                yield Ok(Bytes::from(chunk));
            }
        }
    };
    Response::builder()
        .header(http::header::CONTENT_TYPE, "text/plain")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// The event type a selector watch reports for `ev`, if any: a change that makes an object
/// start (stop) matching is ADDED (DELETED), as the real watch cache reports it.
fn classify(ev: &WatchEvent, matches: &dyn Fn(&Value) -> bool) -> Option<&'static str> {
    let now = matches(&ev.object);
    match ev.etype {
        EventType::Added => now.then_some("ADDED"),
        EventType::Deleted => now.then_some("DELETED"),
        EventType::Modified => {
            let was = ev.prev.as_deref().is_none_or(matches);
            match (was, now) {
                (true, true) => Some("MODIFIED"),
                (false, true) => Some("ADDED"),
                (true, false) => Some("DELETED"),
                (false, false) => None,
            }
        }
    }
}

/// Streams watch events: synthetic ADDED for the current state when no resourceVersion is
/// given (or `0`, or `sendInitialEvents=true`), else the history after the given version,
/// then live events until `timeoutSeconds`, shutdown, or the client goes away.
fn watch(sim: Arc<Sim>, t: Target, q: &HashMap<String, String>, table: bool) -> Response {
    let def = t.def;
    let label = match LabelSelector::parse(q.get("labelSelector").map_or("", String::as_str)) {
        Ok(l) => l,
        Err(e) => return ApiError::bad_request(e).into_response(),
    };
    let field = match FieldSelector::parse(q.get("fieldSelector").map_or("", String::as_str)) {
        Ok(f) => f,
        Err(e) => return ApiError::bad_request(e).into_response(),
    };
    let ns = t.ns.clone().filter(|_| def.namespaced);
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|v| v == "true");
    let send_initial = q.get("sendInitialEvents").is_some_and(|v| v == "true");
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_WATCH_TIMEOUT);
    let rv_param = q.get("resourceVersion").cloned().unwrap_or_default();
    let matches = move |o: &Value| -> bool {
        ns.as_deref()
            .is_none_or(|n| str_at(o, "/metadata/namespace") == n)
            && label.matches_obj(o)
            && field.matches(o)
    };
    let custom = sim.lock().custom_type(def).cloned();
    let encode = move |etype: &str, o: &Value| -> Bytes {
        if table {
            let rv = str_at(o, "/metadata/resourceVersion").parse().unwrap_or(0);
            let rows = render_table(custom.as_ref(), def, &[Arc::new(o.clone())], rv);
            event_line(etype, &rows)
        } else if def.custom {
            event_line(etype, &crd::present(def, o))
        } else {
            event_line(etype, o)
        }
    };

    let mut initial: Vec<Bytes> = Vec::new();
    let (rx, start_rv) = {
        let st = sim.lock();
        if rv_param.is_empty() || rv_param == "0" || send_initial {
            for o in st.list(def.plural, t.ns.as_deref()) {
                if matches(&o) {
                    initial.push(encode("ADDED", &o));
                }
            }
            if send_initial && bookmarks {
                initial.push(bookmark(def, st.rv(), true));
            }
            (st.subscribe(), st.rv())
        } else {
            let from: u64 = match rv_param.parse() {
                Ok(n) => n,
                Err(_) => {
                    return ApiError::bad_request(format!("invalid resource version: {rv_param}"))
                        .into_response()
                }
            };
            match st.watch_from(def.plural, from) {
                Ok((backlog, rx)) => {
                    for ev in backlog {
                        if let Some(t) = classify(&ev, &matches) {
                            initial.push(encode(t, &ev.object));
                        }
                    }
                    (rx, st.rv())
                }
                Err(e) => {
                    let status = ApiError::new(
                        410,
                        "Expired",
                        format!("too old resource version: {} ({})", e.requested, e.oldest),
                    )
                    .status();
                    let line = event_line("ERROR", &status);
                    return Response::builder()
                        .header(http::header::CONTENT_TYPE, "application/json")
                        .body(Body::from(line))
                        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response());
                }
            }
        }
    };

    let shutdown = sim.shutdown.clone();
    let plural = def.plural;
    let stream = async_stream::stream! {
        let mut rx = rx;
        let mut last_rv = start_rv;
        for b in initial {
            yield Ok::<Bytes, std::io::Error>(b);
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut ticker = tokio::time::interval(BOOKMARK_INTERVAL);
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = &mut deadline => break,
                _ = shutdown.cancelled() => break,
                _ = ticker.tick(), if bookmarks => {
                    yield Ok(bookmark(def, last_rv, false));
                }
                ev = rx.recv() => {
                    match ev {
                        Ok(ev) => {
                            let ev: Arc<WatchEvent> = ev;
                            last_rv = last_rv.max(ev.rv);
                            if ev.plural != plural { continue; }
                            let Some(t) = classify(&ev, &matches) else { continue };
                            yield Ok(encode(t, &ev.object));
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                            let status = ApiError::new(410, "Expired", "watch fell behind; relist").status();
                            yield Ok(event_line("ERROR", &status));
                            break;
                        }
                        Err(_) => break,
                    }
                }
            }
        }
    };
    Response::builder()
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::CACHE_CONTROL, "no-cache, private")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(etype: EventType, now: Value, prev: Option<Value>) -> WatchEvent {
        WatchEvent {
            rv: 1,
            plural: "pods",
            etype,
            object: Arc::new(now),
            prev: prev.map(Arc::new),
        }
    }

    #[test]
    fn dry_runs_asked_in_a_delete_or_eviction_body_are_recorded_as_dry_runs() {
        let none = HashMap::new();
        let query: HashMap<String, String> = [("dryRun".to_string(), "All".to_string())].into();
        let all = br#"{"dryRun": ["All"]}"#;
        let eviction = br#"{"deleteOptions": {"dryRun": ["All"]}}"#;
        assert!(asks_dry_run("delete", None, &none, all));
        assert!(asks_dry_run("deletecollection", None, &none, all));
        assert!(asks_dry_run("create", Some("eviction"), &none, eviction));
        assert!(asks_dry_run("patch", None, &query, b"{}"));
        assert!(!asks_dry_run("delete", None, &none, b""));
        assert!(!asks_dry_run("delete", None, &none, br#"{"dryRun": []}"#));
        assert!(!asks_dry_run("create", Some("eviction"), &none, all));
        // An object's own fields are not options.
        assert!(!asks_dry_run("create", None, &none, all));
    }

    #[test]
    fn selector_watches_turn_label_changes_into_added_and_deleted() {
        let sel = LabelSelector::parse("app=web").unwrap();
        let m = |o: &Value| sel.matches_obj(o);
        let web = json!({"metadata": {"labels": {"app": "web"}}});
        let other = json!({"metadata": {"labels": {"app": "api"}}});
        let c = |e| classify(&e, &m);
        assert_eq!(
            c(ev(EventType::Modified, web.clone(), Some(web.clone()))),
            Some("MODIFIED")
        );
        assert_eq!(
            c(ev(EventType::Modified, web.clone(), Some(other.clone()))),
            Some("ADDED")
        );
        assert_eq!(
            c(ev(EventType::Modified, other.clone(), Some(web.clone()))),
            Some("DELETED")
        );
        assert_eq!(
            c(ev(EventType::Modified, other.clone(), Some(other.clone()))),
            None
        );
        assert_eq!(c(ev(EventType::Added, other.clone(), None)), None);
        assert_eq!(c(ev(EventType::Deleted, web, None)), Some("DELETED"));
    }

    #[test]
    fn paths_parse_into_resource_namespace_name_and_subresource() {
        let st = State::new(1.0);
        let t = parse_target(
            &st,
            "apps",
            "v1",
            &["namespaces", "prod", "deployments", "web", "scale"],
        )
        .unwrap();
        assert_eq!(
            (
                t.def.plural,
                t.ns.as_deref(),
                t.name.as_deref(),
                t.sub.as_deref()
            ),
            ("deployments", Some("prod"), Some("web"), Some("scale"))
        );
        let t = parse_target(&st, "", "v1", &["namespaces", "prod"]).unwrap();
        assert_eq!(
            (t.def.plural, t.name.as_deref()),
            ("namespaces", Some("prod"))
        );
        let t = parse_target(&st, "", "v1", &["pods"]).unwrap();
        assert_eq!((t.def.plural, t.ns), ("pods", None));
        assert!(parse_target(&st, "", "v1", &["namespaces", "prod", "pods", "p", "exec"]).is_err());
        assert!(parse_target(&st, "", "v1", &["widgets"]).is_err());
        assert!(
            parse_target(&st, "", "v1", &["namespaces", "a", "pods", "b", "log", "x"]).is_err()
        );
    }
}
