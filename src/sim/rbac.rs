//! Authorization: the request's attributes (as the API server's `RequestInfo` parses them
//! from the path), RBAC over Roles, ClusterRoles and their bindings, the `403 Forbidden`
//! Status with the real message, and the access reviews (`kubectl auth can-i`).
//!
//! `system:masters` may do anything. Every authenticated user may read discovery and the
//! health and version paths (as `system:discovery` grants) and create the self reviews (as
//! `system:basic-user`). Everything else needs an RBAC rule. Not modelled: aggregated
//! ClusterRoles, the escalation and bind checks on writing roles and bindings.

use serde_json::{json, Value};

use super::auth::User;
use super::errors::ApiError;
use super::store::{str_at, State};

/// Paths every authenticated user may `get` (discovery, version, health, the simulator's
/// own record of writes).
const PUBLIC_PATHS: &[&str] = &[
    "/api",
    "/api/*",
    "/apis",
    "/apis/*",
    "/version",
    "/version/",
    "/openapi",
    "/openapi/*",
    "/healthz",
    "/livez",
    "/readyz",
    "/sim/*",
];
/// Create-only reviews every authenticated user may ask about themselves.
const SELF_REVIEWS: &[(&str, &str)] = &[
    ("authorization.k8s.io", "selfsubjectaccessreviews"),
    ("authorization.k8s.io", "selfsubjectrulesreviews"),
    ("authentication.k8s.io", "selfsubjectreviews"),
];

/// What a request asks to do, as the authorizer sees it.
#[derive(Debug, Clone)]
pub struct Attrs {
    pub user: User,
    pub verb: String,
    pub resource_request: bool,
    pub path: String,
    pub group: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
}

impl Attrs {
    /// Attributes of a resource request.
    pub fn resource(
        user: &User,
        verb: &str,
        group: &str,
        resource: &str,
        subresource: &str,
        namespace: &str,
        name: &str,
    ) -> Attrs {
        Attrs {
            user: user.clone(),
            verb: verb.into(),
            resource_request: true,
            path: String::new(),
            group: group.into(),
            resource: resource.into(),
            subresource: subresource.into(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// Parses a request like the API server's `RequestInfoFactory`: `/api/v1/...` and
    /// `/apis/G/V/...` with at least a resource are resource requests, anything else a
    /// non-resource path.
    pub fn of_request(
        user: &User,
        method: &http::Method,
        path: &str,
        query: &std::collections::HashMap<String, String>,
    ) -> Attrs {
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let (group, rest) = match segs.as_slice() {
            ["api", _v, rest @ ..] if !rest.is_empty() => ("", rest),
            ["apis", g, _v, rest @ ..] if !rest.is_empty() => (*g, rest),
            _ => {
                let verb = match *method {
                    http::Method::POST => "post",
                    http::Method::PUT => "put",
                    http::Method::PATCH => "patch",
                    http::Method::DELETE => "delete",
                    http::Method::HEAD => "head",
                    _ => "get",
                };
                return Attrs {
                    user: user.clone(),
                    verb: verb.into(),
                    resource_request: false,
                    path: if path.is_empty() {
                        "/".into()
                    } else {
                        path.into()
                    },
                    group: String::new(),
                    resource: String::new(),
                    subresource: String::new(),
                    namespace: String::new(),
                    name: String::new(),
                };
            }
        };
        let mut parts: Vec<&str> = rest.to_vec();
        let watch_path = parts.first() == Some(&"watch");
        if watch_path {
            parts.remove(0);
        }
        let mut namespace = "";
        if parts.first() == Some(&"namespaces") && parts.len() > 1 {
            namespace = parts[1];
            if parts.len() > 2 && !matches!(parts[2], "status" | "finalize") {
                parts.drain(..2);
            }
        }
        let resource = parts.first().copied().unwrap_or("");
        let mut name = parts.get(1).copied().unwrap_or("").to_string();
        let subresource = parts.get(2).copied().unwrap_or("");
        let mut verb = match *method {
            http::Method::POST => "create",
            http::Method::PUT => "update",
            http::Method::PATCH => "patch",
            http::Method::DELETE if name.is_empty() => "deletecollection",
            http::Method::DELETE => "delete",
            _ if watch_path => "watch",
            _ if name.is_empty() => "list",
            _ => "get",
        };
        if verb == "list" && query.get("watch").is_some_and(|w| w == "true" || w == "1") {
            verb = "watch";
        }
        if matches!(verb, "list" | "watch" | "deletecollection") && name.is_empty() {
            if let Some(fs) = query.get("fieldSelector") {
                for term in fs.split(',') {
                    let v = term
                        .strip_prefix("metadata.name==")
                        .or_else(|| term.strip_prefix("metadata.name="));
                    if let Some(v) = v {
                        name = v.to_string();
                    }
                }
            }
        }
        Attrs::resource(user, verb, group, resource, subresource, namespace, &name)
    }
}

/// The API server's `403 Forbidden` for a refused request (`forbiddenMessage` plus the
/// authorizer's reason).
pub fn forbidden(a: &Attrs, reason: &str) -> ApiError {
    let user = &a.user.name;
    let msg = if !a.resource_request {
        format!("User {user:?} cannot {} path {:?}", a.verb, a.path)
    } else {
        let res = if a.subresource.is_empty() {
            a.resource.clone()
        } else {
            format!("{}/{}", a.resource, a.subresource)
        };
        if a.namespace.is_empty() {
            format!(
                "User {user:?} cannot {} resource {res:?} in API group {:?} at the cluster scope",
                a.verb, a.group
            )
        } else {
            format!(
                "User {user:?} cannot {} resource {res:?} in API group {:?} in the namespace {:?}",
                a.verb, a.group, a.namespace
            )
        }
    };
    let err = if reason.is_empty() {
        msg
    } else {
        format!("{msg}: {reason}")
    };
    let qualified = if a.group.is_empty() {
        a.resource.clone()
    } else {
        format!("{}.{}", a.resource, a.group)
    };
    let message = if qualified.is_empty() {
        format!("forbidden: {err}")
    } else if a.name.is_empty() {
        format!("{qualified} is forbidden: {err}")
    } else {
        format!("{qualified} {:?} is forbidden: {err}", a.name)
    };
    let mut e = ApiError::new(403, "Forbidden", message);
    let mut details = serde_json::Map::new();
    if !a.name.is_empty() {
        details.insert("name".into(), json!(a.name));
    }
    if !a.group.is_empty() {
        details.insert("group".into(), json!(a.group));
    }
    if !a.resource.is_empty() {
        details.insert("kind".into(), json!(a.resource));
    }
    e.details = Some(Value::Object(details));
    e
}

/// Refuses what [`authorize`] does not allow.
///
/// # Errors
/// The `403 Forbidden` of [`forbidden`].
pub fn check(st: &State, a: &Attrs) -> Result<(), ApiError> {
    let (allowed, reason) = authorize(st, a);
    if allowed {
        Ok(())
    } else {
        Err(forbidden(a, &reason))
    }
}

fn has(list: Option<&Value>, want: &str) -> bool {
    list.and_then(Value::as_array)
        .is_some_and(|l| l.iter().any(|x| x == "*" || x == want))
}

fn path_matches(rules: &[&str], path: &str) -> bool {
    rules.iter().any(|r| {
        *r == "*"
            || *r == path
            || r.strip_suffix('*')
                .is_some_and(|prefix| path.starts_with(prefix))
    })
}

/// Whether one PolicyRule allows the request (k8s `RuleAllows`).
fn rule_allows(a: &Attrs, rule: &Value) -> bool {
    if !has(rule.get("verbs"), &a.verb) {
        return false;
    }
    if !a.resource_request {
        let urls: Vec<&str> = rule
            .get("nonResourceURLs")
            .and_then(Value::as_array)
            .map(|l| l.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        return path_matches(&urls, &a.path);
    }
    if !has(rule.get("apiGroups"), &a.group) {
        return false;
    }
    let combined = if a.subresource.is_empty() {
        a.resource.clone()
    } else {
        format!("{}/{}", a.resource, a.subresource)
    };
    let resources_ok = rule
        .get("resources")
        .and_then(Value::as_array)
        .is_some_and(|rs| {
            rs.iter().filter_map(Value::as_str).any(|r| {
                r == "*"
                    || r == combined
                    || (!a.subresource.is_empty()
                        && r.strip_prefix("*/") == Some(a.subresource.as_str()))
            })
        });
    if !resources_ok {
        return false;
    }
    match rule.get("resourceNames").and_then(Value::as_array) {
        Some(names) if !names.is_empty() => {
            !a.name.is_empty() && names.iter().any(|n| n == a.name.as_str())
        }
        _ => true,
    }
}

/// The subject of a binding that matches `user`, described as the RBAC authorizer does.
fn matching_subject(binding: &Value, user: &User, binding_ns: &str) -> Option<String> {
    let subjects = binding.get("subjects").and_then(Value::as_array)?;
    subjects.iter().find_map(|s| {
        let (kind, name) = (str_at(s, "/kind"), str_at(s, "/name"));
        let hit = match kind {
            "User" => user.name == name,
            "Group" => user.groups.iter().any(|g| g == name),
            "ServiceAccount" => {
                let ns = match str_at(s, "/namespace") {
                    "" => binding_ns,
                    n => n,
                };
                !ns.is_empty() && user.name == super::auth::sa_username(ns, name)
            }
            _ => false,
        };
        hit.then(|| match kind {
            "ServiceAccount" => {
                let ns = match str_at(s, "/namespace") {
                    "" => binding_ns,
                    n => n,
                };
                format!("{kind} \"{name}/{ns}\"")
            }
            _ => format!("{kind} {name:?}"),
        })
    })
}

/// Whether the request is allowed, and the authorizer's reason (why it was allowed, or the
/// errors met while looking, e.g. a binding to a missing role).
pub fn authorize(st: &State, a: &Attrs) -> (bool, String) {
    let authenticated = a
        .user
        .groups
        .iter()
        .any(|g| g == super::auth::AUTHENTICATED);
    if a.user.is_master() {
        return (true, String::new());
    }
    if authenticated {
        if !a.resource_request && a.verb == "get" && path_matches(PUBLIC_PATHS, &a.path) {
            return (true, String::new());
        }
        if a.resource_request
            && a.verb == "create"
            && SELF_REVIEWS.contains(&(a.group.as_str(), a.resource.as_str()))
        {
            return (true, String::new());
        }
    }
    let mut errors: Vec<String> = Vec::new();
    for b in st.list("clusterrolebindings", None) {
        let Some(subject) = matching_subject(&b, &a.user, "") else {
            continue;
        };
        let role_name = str_at(&b, "/roleRef/name");
        if str_at(&b, "/roleRef/kind") != "ClusterRole" {
            continue;
        }
        let Some(role) = st.get("clusterroles", "", role_name) else {
            errors.push(format!(
                "clusterrole.rbac.authorization.k8s.io {role_name:?} not found"
            ));
            continue;
        };
        if rules(role).iter().any(|r| rule_allows(a, r)) {
            return (
                true,
                format!(
                    "RBAC: allowed by ClusterRoleBinding {:?} of ClusterRole {role_name:?} to {subject}",
                    str_at(&b, "/metadata/name")
                ),
            );
        }
    }
    if !a.namespace.is_empty() {
        for b in st.list("rolebindings", Some(&a.namespace)) {
            let Some(subject) = matching_subject(&b, &a.user, &a.namespace) else {
                continue;
            };
            let role_name = str_at(&b, "/roleRef/name");
            let role_kind = str_at(&b, "/roleRef/kind");
            let role = match role_kind {
                "Role" => st.get("roles", &a.namespace, role_name),
                "ClusterRole" => st.get("clusterroles", "", role_name),
                _ => continue,
            };
            let Some(role) = role else {
                errors.push(format!(
                    "{}.rbac.authorization.k8s.io {role_name:?} not found",
                    role_kind.to_lowercase()
                ));
                continue;
            };
            if rules(role).iter().any(|r| rule_allows(a, r)) {
                return (
                    true,
                    format!(
                        "RBAC: allowed by RoleBinding \"{}/{}\" of {role_kind} {role_name:?} to {subject}",
                        str_at(&b, "/metadata/name"),
                        a.namespace
                    ),
                );
            }
        }
    }
    let reason = match errors.len() {
        0 => String::new(),
        1 => format!("RBAC: {}", errors[0]),
        _ => format!("RBAC: [{}]", errors.join(", ")),
    };
    (false, reason)
}

fn rules(role: &Value) -> Vec<Value> {
    role.get("rules")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// Answers a `SubjectAccessReview`, `LocalSubjectAccessReview`, `SelfSubjectAccessReview`
/// or `SelfSubjectReview` created by `requester` (nothing is stored).
///
/// # Errors
/// 400 for a local review naming another namespace than its URL.
pub fn review(
    st: &State,
    kind: &str,
    ns: &str,
    mut body: Value,
    requester: &User,
) -> Result<Value, ApiError> {
    let group = if kind == "SelfSubjectReview" {
        "authentication.k8s.io"
    } else {
        "authorization.k8s.io"
    };
    body["apiVersion"] = json!(format!("{group}/v1"));
    body["kind"] = json!(kind);
    if body.get("metadata").is_none_or(|m| !m.is_object()) {
        body["metadata"] = json!({});
    }
    body["metadata"]["creationTimestamp"] = Value::Null;
    if kind == "SelfSubjectReview" {
        body["status"] = json!({"userInfo": {
            "username": requester.name,
            "uid": requester.uid,
            "groups": requester.groups,
        }});
        return Ok(body);
    }
    let user = if kind == "SelfSubjectAccessReview" {
        requester.clone()
    } else {
        User {
            name: str_at(&body, "/spec/user").to_string(),
            uid: str_at(&body, "/spec/uid").to_string(),
            groups: body
                .pointer("/spec/groups")
                .and_then(Value::as_array)
                .map(|g| {
                    g.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
        }
    };
    let attrs = if let Some(r) = body.pointer("/spec/resourceAttributes") {
        let rns = str_at(r, "/namespace");
        if kind == "LocalSubjectAccessReview" && rns != ns {
            return Err(ApiError::bad_request(format!(
                "spec.resourceAttributes.namespace must match namespace: {ns}"
            )));
        }
        Attrs::resource(
            &user,
            str_at(r, "/verb"),
            str_at(r, "/group"),
            str_at(r, "/resource"),
            str_at(r, "/subresource"),
            rns,
            str_at(r, "/name"),
        )
    } else {
        let nr = body
            .pointer("/spec/nonResourceAttributes")
            .cloned()
            .unwrap_or(json!({}));
        Attrs {
            user: user.clone(),
            verb: str_at(&nr, "/verb").to_string(),
            resource_request: false,
            path: str_at(&nr, "/path").to_string(),
            group: String::new(),
            resource: String::new(),
            subresource: String::new(),
            namespace: String::new(),
            name: String::new(),
        }
    };
    let (allowed, reason) = authorize(st, &attrs);
    let mut status = json!({"allowed": allowed});
    if !reason.is_empty() {
        status["reason"] = json!(reason);
    }
    body["status"] = status;
    Ok(body)
}

/// The ClusterRole `cluster-admin` and its binding to `system:masters`, as every cluster
/// has them.
pub fn bootstrap_objects() -> Vec<Value> {
    vec![
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "cluster-admin", "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
            "rules": [
                {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                {"nonResourceURLs": ["*"], "verbs": ["*"]},
            ],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "cluster-admin", "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:masters"}],
        }),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn sa() -> User {
        User::service_account("executor", "action-scale")
    }

    #[test]
    fn requests_parse_like_the_api_server() {
        let q = HashMap::new();
        let a = Attrs::of_request(
            &sa(),
            &http::Method::PATCH,
            "/apis/apps/v1/namespaces/default/deployments/web/scale",
            &q,
        );
        assert_eq!(
            (
                a.verb.as_str(),
                a.group.as_str(),
                a.resource.as_str(),
                a.subresource.as_str(),
                a.namespace.as_str(),
                a.name.as_str()
            ),
            ("patch", "apps", "deployments", "scale", "default", "web")
        );
        assert_eq!(
            forbidden(&a, "").message,
            "deployments.apps \"web\" is forbidden: User \"system:serviceaccount:executor:action-scale\" cannot patch resource \"deployments/scale\" in API group \"apps\" in the namespace \"default\""
        );
        let w: HashMap<String, String> = [("watch".to_string(), "1".to_string())].into();
        let a = Attrs::of_request(&sa(), &http::Method::GET, "/api/v1/nodes", &w);
        assert_eq!(a.verb, "watch");
        assert_eq!(
            forbidden(&a, "").message,
            "nodes is forbidden: User \"system:serviceaccount:executor:action-scale\" cannot watch resource \"nodes\" in API group \"\" at the cluster scope"
        );
        let a = Attrs::of_request(&sa(), &http::Method::GET, "/api/v1/namespaces/prod", &q);
        assert_eq!(
            (a.resource.as_str(), a.name.as_str(), a.namespace.as_str()),
            ("namespaces", "prod", "prod")
        );
        let a = Attrs::of_request(&sa(), &http::Method::GET, "/apis/apps", &q);
        assert!(!a.resource_request);
    }

    #[test]
    fn rules_match_subresources_wildcards_and_names() {
        let a = Attrs::resource(
            &sa(),
            "patch",
            "apps",
            "deployments",
            "scale",
            "default",
            "web",
        );
        let allows = |r: Value| rule_allows(&a, &r);
        assert!(allows(
            json!({"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["patch"]})
        ));
        assert!(allows(
            json!({"apiGroups": ["*"], "resources": ["*/scale"], "verbs": ["*"]})
        ));
        assert!(allows(
            json!({"apiGroups": ["apps"], "resources": ["*"], "verbs": ["patch"], "resourceNames": ["web"]})
        ));
        assert!(!allows(
            json!({"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["patch"]})
        ));
        assert!(!allows(
            json!({"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["patch"], "resourceNames": ["api"]})
        ));
        assert!(!allows(
            json!({"apiGroups": [""], "resources": ["deployments/scale"], "verbs": ["patch"]})
        ));
    }
}
