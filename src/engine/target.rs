//! Resolving the target of a request: from the request, else from the alert context (as the
//! seed service did), with the action's default kind and the `default` namespace.

use super::EngineError;
use crate::domain::{ActionSpec, AlertContext, RequestedTarget, Target};

/// In an action's `target_kinds`: it works on any kind (resolved by the action itself).
pub const ANY_KIND: &str = "*";

/// Kinds that live outside namespaces.
const CLUSTER_SCOPED: &[&str] = &["Node", "Namespace"];

/// The namespace used when neither the request nor the alert names one (kubectl's default).
pub const DEFAULT_NAMESPACE: &str = "default";

/// Resolves and checks the target for `spec`'s action.
///
/// # Errors
/// [`EngineError::InvalidArgument`] naming `target.name`, `target.kind` or `target.namespace`.
pub fn resolve(
    spec: &ActionSpec,
    requested: &RequestedTarget,
    alert: Option<&AlertContext>,
) -> Result<Target, EngineError> {
    let label = |key: &str| -> Option<String> {
        alert
            .and_then(|a| a.labels.get(key).or_else(|| a.annotations.get(key)))
            .filter(|v| !v.is_empty())
            .cloned()
    };
    // `resource` like `deployment/web` names both kind and name.
    let resource = label("resource").and_then(|r| {
        r.split_once('/')
            .map(|(kind, name)| (kind.to_string(), name.to_string()))
    });
    let kind_given = if !requested.kind.is_empty() {
        Some(requested.kind.clone())
    } else if requested.name.is_empty() {
        resource.as_ref().map(|(kind, _)| kind.clone())
    } else {
        None
    };
    let any_kind = spec.target_kinds.first() == Some(&ANY_KIND);
    let kind = match kind_given {
        None if any_kind => {
            return Err(EngineError::invalid(
                "target.kind",
                format!(
                    "is required: {} works on any kind the cluster serves",
                    spec.name
                ),
            ))
        }
        None => spec.target_kinds[0].to_string(),
        // Any kind: the action finds it through discovery (and refuses one the cluster does
        // not serve); here it only has to look like a kind or a plural.
        Some(given) if any_kind => {
            if given.is_empty()
                || given.len() > 63
                || !given.bytes().all(|b| b.is_ascii_alphanumeric())
            {
                return Err(EngineError::invalid(
                    "target.kind",
                    format!("{given:?} is not a kind (letters and digits, e.g. ConfigMap)"),
                ));
            }
            given
        }
        Some(given) => spec
            .target_kinds
            .iter()
            .find(|k| k.eq_ignore_ascii_case(&given) || plural_matches(k, &given))
            .map(|k| k.to_string())
            .ok_or_else(|| {
                EngineError::invalid(
                    "target.kind",
                    format!(
                        "{} works on {}, not {given:?}",
                        spec.name,
                        spec.target_kinds.join(", ")
                    ),
                )
            })?,
    };
    let name = if !requested.name.is_empty() {
        requested.name.clone()
    } else {
        let by_kind = match kind.as_str() {
            "Deployment" => label("deployment").or_else(|| label("app")),
            "Pod" => label("pod"),
            "StatefulSet" => label("statefulset").or_else(|| label("app")),
            "DaemonSet" => label("daemonset").or_else(|| label("app")),
            "Node" => label("node").or_else(|| label("instance")),
            other => label(&other.to_lowercase()),
        };
        by_kind
            .or_else(|| resource.map(|(_, name)| name))
            .ok_or_else(|| {
                EngineError::invalid(
                    "target.name",
                    format!(
                        "is required (or give an alert whose labels name the {})",
                        kind.to_lowercase()
                    ),
                )
            })?
    };
    if !is_dns_subdomain(&name) {
        return Err(EngineError::invalid(
            "target.name",
            format!("{name:?} is not a valid Kubernetes name"),
        ));
    }
    let namespace = if CLUSTER_SCOPED.contains(&kind.as_str()) {
        // One node is one target whatever namespace a request names.
        String::new()
    } else if !requested.namespace.is_empty() {
        requested.namespace.clone()
    } else {
        label("namespace").unwrap_or_else(|| DEFAULT_NAMESPACE.to_string())
    };
    if !namespace.is_empty() && !is_dns_label(&namespace) {
        return Err(EngineError::invalid(
            "target.namespace",
            format!("{namespace:?} is not a valid namespace name"),
        ));
    }
    Ok(Target {
        cluster: requested.cluster.clone(),
        namespace,
        kind,
        name,
    })
}

/// kubectl's plural and short names for the kinds actions take.
fn plural_matches(kind: &str, given: &str) -> bool {
    let given = given.to_ascii_lowercase();
    let kind_lower = kind.to_ascii_lowercase();
    let short = match kind {
        "Deployment" => "deploy",
        "Pod" => "po",
        "StatefulSet" => "sts",
        "DaemonSet" => "ds",
        "Node" => "no",
        "PersistentVolumeClaim" => "pvc",
        "HorizontalPodAutoscaler" => "hpa",
        "Namespace" => "ns",
        _ => "",
    };
    given == format!("{kind_lower}s") || (!short.is_empty() && given == short)
}

/// RFC 1123 label: what namespaces must be.
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// RFC 1123 subdomain: what most object names must be.
fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::Registry;

    fn spec(name: &str) -> ActionSpec {
        Registry::builtin().get(name).unwrap().spec().clone()
    }

    fn mk_alert(labels: &[(&str, &str)]) -> AlertContext {
        AlertContext {
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn the_name_comes_from_the_alerts_deployment_or_app_label() {
        let t = resolve(
            &spec("scale_deployment"),
            &RequestedTarget::default(),
            Some(&mk_alert(&[("app", "web")])),
        )
        .unwrap();
        assert_eq!(
            (t.namespace.as_str(), t.kind.as_str(), t.name.as_str()),
            ("default", "Deployment", "web")
        );
        let alert = mk_alert(&[
            ("deployment", "api"),
            ("app", "web"),
            ("namespace", "production"),
        ]);
        let t = resolve(
            &spec("scale_deployment"),
            &RequestedTarget::default(),
            Some(&alert),
        )
        .unwrap();
        assert_eq!(
            (t.namespace.as_str(), t.name.as_str()),
            ("production", "api")
        );
    }

    #[test]
    fn a_resource_label_names_kind_and_name() {
        let alert = mk_alert(&[("resource", "deployment/web")]);
        let t = resolve(
            &spec("rolling_restart_deployment"),
            &RequestedTarget::default(),
            Some(&alert),
        )
        .unwrap();
        assert_eq!((t.kind.as_str(), t.name.as_str()), ("Deployment", "web"));
    }

    #[test]
    fn a_missing_name_or_a_wrong_kind_is_an_invalid_argument_naming_the_field() {
        let err =
            resolve(&spec("scale_deployment"), &RequestedTarget::default(), None).unwrap_err();
        assert!(
            err.to_string().starts_with("target.name: is required"),
            "{err}"
        );
        let requested = RequestedTarget {
            kind: "Pod".into(),
            name: "x".into(),
            ..Default::default()
        };
        let err = resolve(&spec("scale_deployment"), &requested, None).unwrap_err();
        assert!(err.to_string().starts_with("target.kind:"), "{err}");
    }
}
