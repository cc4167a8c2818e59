//! Authentication and impersonation, as the API server's filters do them before anything else.
//!
//! - No `Authorization` header (what the simulator's own kubeconfig sends): user `admin` in
//!   `system:masters` and `system:authenticated` — allowed everything.
//! - `Authorization: Bearer T` with a token the TokenRequest subresource issued
//!   (`kubectl create token SA -n NS`): `system:serviceaccount:NS:SA` in
//!   `system:serviceaccounts`, `system:serviceaccounts:NS`, `system:authenticated`, until the
//!   token expires or the ServiceAccount is deleted. Any other credential: `401 Unauthorized`.
//! - `Impersonate-User`, `Impersonate-Group` (repeatable) and `Impersonate-Uid` act as another
//!   user when the authenticated one may `impersonate` that user (or ServiceAccount), each
//!   group and the uid (`403` with the API server's message otherwise).

use std::collections::{HashMap, VecDeque};

use chrono::{DateTime, Utc};
use http::HeaderMap;
use serde_json::{json, Value};

use super::errors::ApiError;
use super::rbac::{self, Attrs};
use super::resources::by_plural;
use super::store::{str_at, State};

/// Tokens kept; issuing more drops the oldest (which then answer 401).
pub const MAX_TOKENS: usize = 10_000;
/// Lifetime of a token when the request names none, and the shortest accepted (as the real
/// server: one hour, ten minutes).
const DEFAULT_TTL_SECONDS: i64 = 3600;
const MIN_TTL_SECONDS: i64 = 600;
/// Longest lifetime honoured (the real server caps at 2^32 seconds).
const MAX_TTL_SECONDS: i64 = 1 << 32;

pub const MASTERS: &str = "system:masters";
pub const AUTHENTICATED: &str = "system:authenticated";

/// Who a request acts as, after authentication and impersonation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
}

impl User {
    /// The user of a request without credentials.
    pub fn admin() -> User {
        User {
            name: "admin".into(),
            uid: String::new(),
            groups: vec![MASTERS.into(), AUTHENTICATED.into()],
        }
    }

    pub fn is_master(&self) -> bool {
        self.groups.iter().any(|g| g == MASTERS)
    }

    /// `system:serviceaccount:NS:NAME` with the ServiceAccount groups.
    pub fn service_account(ns: &str, name: &str) -> User {
        User {
            name: sa_username(ns, name),
            uid: String::new(),
            groups: sa_groups(ns),
        }
    }
}

pub fn sa_username(ns: &str, name: &str) -> String {
    format!("system:serviceaccount:{ns}:{name}")
}

fn sa_groups(ns: &str) -> Vec<String> {
    vec![
        "system:serviceaccounts".into(),
        format!("system:serviceaccounts:{ns}"),
        AUTHENTICATED.into(),
    ]
}

/// `(namespace, name)` of a `system:serviceaccount:NS:NAME` user name.
pub fn parse_sa_username(user: &str) -> Option<(&str, &str)> {
    let rest = user.strip_prefix("system:serviceaccount:")?;
    let (ns, name) = rest.split_once(':')?;
    (!ns.is_empty() && !name.is_empty() && !name.contains(':')).then_some((ns, name))
}

#[derive(Debug, Clone)]
struct Issued {
    ns: String,
    name: String,
    sa_uid: String,
    expires: DateTime<Utc>,
}

/// The ServiceAccount tokens a cluster issued, at most [`MAX_TOKENS`], oldest dropped first.
#[derive(Debug, Default)]
pub struct Tokens {
    by_token: HashMap<String, Issued>,
    order: VecDeque<String>,
}

impl Tokens {
    fn issue(&mut self, issued: Issued) -> String {
        let token = format!(
            "sim-sa.{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        while self.order.len() >= MAX_TOKENS {
            if let Some(old) = self.order.pop_front() {
                self.by_token.remove(&old);
            }
        }
        self.order.push_back(token.clone());
        self.by_token.insert(token.clone(), issued);
        token
    }

    pub fn len(&self) -> usize {
        self.by_token.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_token.is_empty()
    }
}

pub fn unauthorized() -> ApiError {
    ApiError::new(401, "Unauthorized", "Unauthorized")
}

/// The authenticated user of a request.
///
/// # Errors
/// `401 Unauthorized` for a credential the cluster did not issue, an expired token, or one
/// whose ServiceAccount is gone.
pub fn authenticate(st: &State, headers: &HeaderMap) -> Result<User, ApiError> {
    let Some(h) = headers.get(http::header::AUTHORIZATION) else {
        return Ok(User::admin());
    };
    let token = h
        .to_str()
        .ok()
        .and_then(|v| {
            let (scheme, t) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| t.trim())
        })
        .ok_or_else(unauthorized)?;
    let issued = st.tokens.by_token.get(token).ok_or_else(unauthorized)?;
    let sa_ok = st
        .get("serviceaccounts", &issued.ns, &issued.name)
        .is_some_and(|sa| str_at(sa, "/metadata/uid") == issued.sa_uid);
    if issued.expires <= Utc::now() || !sa_ok {
        return Err(unauthorized());
    }
    Ok(User::service_account(&issued.ns, &issued.name))
}

fn header_values(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_string)
        .collect()
}

/// Whether a request carries impersonation headers.
pub fn impersonates(headers: &HeaderMap) -> bool {
    ["impersonate-user", "impersonate-group", "impersonate-uid"]
        .iter()
        .any(|h| headers.contains_key(*h))
}

/// The user a request acts as: `user` itself, or whom its impersonation headers name when
/// `user` may impersonate them.
///
/// # Errors
/// `403 Forbidden` naming the first impersonation refused; `500` for groups or a uid
/// without a user, as the real server answers.
pub fn impersonate(st: &State, user: User, headers: &HeaderMap) -> Result<User, ApiError> {
    let name = header_values(headers, "impersonate-user")
        .into_iter()
        .next();
    let groups = header_values(headers, "impersonate-group");
    let uid = header_values(headers, "impersonate-uid").into_iter().next();
    let Some(name) = name else {
        if groups.is_empty() && uid.is_none() {
            return Ok(user);
        }
        return Err(ApiError::internal(
            "requested impersonation of groups or a uid without impersonating a user",
        ));
    };
    let check = |group: &str, resource: &str, ns: &str, target: &str| -> Result<(), ApiError> {
        let attrs = Attrs::resource(&user, "impersonate", group, resource, "", ns, target);
        let (allowed, reason) = rbac::authorize(st, &attrs);
        if allowed {
            Ok(())
        } else {
            Err(rbac::forbidden(&attrs, &reason))
        }
    };
    let sa = parse_sa_username(&name);
    match sa {
        Some((ns, sa_name)) => check("", "serviceaccounts", ns, sa_name)?,
        None => check("", "users", "", &name)?,
    }
    for g in &groups {
        check("", "groups", "", g)?;
    }
    if let Some(u) = &uid {
        check("authentication.k8s.io", "uids", "", u)?;
    }
    let mut acting_groups = groups;
    if let Some((ns, _)) = sa {
        if acting_groups.is_empty() {
            acting_groups = sa_groups(ns);
        }
    }
    if name != "system:anonymous" && !acting_groups.iter().any(|g| g == AUTHENTICATED) {
        acting_groups.push(AUTHENTICATED.into());
    }
    Ok(User {
        name,
        uid: uid.unwrap_or_default(),
        groups: acting_groups,
    })
}

/// `POST .../serviceaccounts/NAME/token`: issues a token for the ServiceAccount and answers
/// the `TokenRequest` with `status.token` and `status.expirationTimestamp`.
///
/// # Errors
/// 404 for a missing ServiceAccount, 422 for a lifetime under ten minutes.
pub fn token_request(
    st: &mut State,
    ns: &str,
    name: &str,
    body: &Value,
    dry: bool,
) -> Result<Value, ApiError> {
    let sa_def =
        by_plural("serviceaccounts").ok_or_else(|| ApiError::internal("no serviceaccounts"))?;
    let sa = st
        .get("serviceaccounts", ns, name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(sa_def, name))?;
    let ttl = body
        .pointer("/spec/expirationSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(DEFAULT_TTL_SECONDS);
    if ttl < MIN_TTL_SECONDS {
        let mut err = ApiError::invalid(
            sa_def,
            name,
            &[(
                "spec.expirationSeconds".into(),
                format!("Invalid value: {ttl}: may not specify a duration less than 10 minutes"),
            )],
        );
        err.message = format!("TokenRequest.authentication.k8s.io \"{name}\" is invalid: spec.expirationSeconds: Invalid value: {ttl}: may not specify a duration less than 10 minutes");
        return Err(err);
    }
    let ttl = ttl.min(MAX_TTL_SECONDS);
    let expires = Utc::now() + chrono::Duration::seconds(ttl);
    let token = if dry {
        String::new()
    } else {
        st.tokens.issue(Issued {
            ns: ns.to_string(),
            name: name.to_string(),
            sa_uid: str_at(&sa, "/metadata/uid").to_string(),
            expires,
        })
    };
    let audiences = body
        .pointer("/spec/audiences")
        .filter(|a| a.as_array().is_some_and(|a| !a.is_empty()))
        .cloned()
        .unwrap_or(json!(["https://kubernetes.default.svc.cluster.local"]));
    Ok(json!({
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": null},
        "spec": {
            "audiences": audiences,
            "expirationSeconds": ttl,
            "boundObjectRef": body.pointer("/spec/boundObjectRef").cloned().unwrap_or(Value::Null),
        },
        "status": {
            "token": token,
            "expirationTimestamp": expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_account_user_names_parse() {
        assert_eq!(
            parse_sa_username("system:serviceaccount:ns:sa"),
            Some(("ns", "sa"))
        );
        assert_eq!(parse_sa_username("system:serviceaccount:ns"), None);
        assert_eq!(parse_sa_username("alice"), None);
    }

    #[test]
    fn tokens_are_bounded_oldest_first() {
        let mut t = Tokens::default();
        let issued = Issued {
            ns: "n".into(),
            name: "s".into(),
            sa_uid: String::new(),
            expires: Utc::now(),
        };
        let first = t.issue(issued.clone());
        for _ in 0..MAX_TOKENS {
            t.issue(issued.clone());
        }
        assert_eq!(t.len(), MAX_TOKENS);
        assert!(!t.by_token.contains_key(&first));
    }
}
