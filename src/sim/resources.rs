//! The table of resource types the simulated API server knows: one row per type, read by
//! discovery, routing, admission and the table printer.

/// A subresource advertised in discovery, with the group/version/kind its body has.
#[derive(Debug)]
pub struct SubDef {
    pub name: &'static str,
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub verbs: &'static [&'static str],
}

/// One served resource type. `plural` is unique across groups here, so it doubles as the
/// store key.
#[derive(Debug)]
pub struct ResourceDef {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    /// Whether `/status` is a separate subresource (then the main resource ignores status writes).
    pub has_status: bool,
    pub subresources: &'static [SubDef],
    /// The verbs discovery advertises (and the only ones served).
    pub verbs: &'static [&'static str],
    /// Registered at run time from a CustomResourceDefinition (see `crd.rs`): unknown fields
    /// are pruned by its schema, `generation` counts every change outside metadata and
    /// status, strategic merge patch is refused.
    pub custom: bool,
}

impl ResourceDef {
    /// `v1` for the core group, `group/version` otherwise.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `deployments.apps`, the qualified name used in error messages.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `Deployment.apps`, the qualified kind used in Invalid messages.
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.to_string()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    pub fn has_sub(&self, name: &str) -> bool {
        self.subresources.iter().any(|s| s.name == name)
    }
}

const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
const SUB_VERBS: &[&str] = &["get", "patch", "update"];

const STATUS: SubDef = SubDef {
    name: "status",
    group: "",
    version: "",
    kind: "",
    verbs: SUB_VERBS,
};
const SCALE: SubDef = SubDef {
    name: "scale",
    group: "autoscaling",
    version: "v1",
    kind: "Scale",
    verbs: SUB_VERBS,
};

pub const VERBS_ALL: &[&str] = VERBS;
/// What a custom resource with a `/status` subresource advertises.
pub static STATUS_SUBS: &[SubDef] = &[STATUS];
const CREATE_ONLY: &[&str] = &["create"];

/// A create-only, cluster-scoped review type (access reviews, `selfsubjectreviews`).
const fn review(
    group: &'static str,
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
) -> ResourceDef {
    ResourceDef {
        group,
        version: "v1",
        plural,
        singular,
        kind,
        namespaced,
        short_names: &[],
        categories: &[],
        has_status: false,
        subresources: &[],
        verbs: CREATE_ONLY,
        custom: false,
    }
}

macro_rules! res {
    ($g:expr, $v:expr, $plural:expr, $singular:expr, $kind:expr, $ns:expr, $short:expr, $cat:expr, $status:expr, $subs:expr) => {
        ResourceDef {
            group: $g,
            version: $v,
            plural: $plural,
            singular: $singular,
            kind: $kind,
            namespaced: $ns,
            short_names: $short,
            categories: $cat,
            has_status: $status,
            subresources: $subs,
            verbs: VERBS,
            custom: false,
        }
    };
}

const ALL: &[&str] = &["all"];
const NONE: &[&str] = &[];

/// Every served resource. Order matters only for discovery output.
pub static RESOURCES: &[ResourceDef] = &[
    res!(
        "",
        "v1",
        "namespaces",
        "namespace",
        "Namespace",
        false,
        &["ns"],
        NONE,
        true,
        &[STATUS]
    ),
    res!(
        "",
        "v1",
        "nodes",
        "node",
        "Node",
        false,
        &["no"],
        NONE,
        true,
        &[STATUS]
    ),
    res!(
        "",
        "v1",
        "pods",
        "pod",
        "Pod",
        true,
        &["po"],
        ALL,
        true,
        &[
            STATUS,
            SubDef {
                name: "eviction",
                group: "policy",
                version: "v1",
                kind: "Eviction",
                verbs: &["create"],
            },
            SubDef {
                name: "log",
                group: "",
                version: "v1",
                kind: "Pod",
                verbs: &["get"],
            },
            SubDef {
                name: "ephemeralcontainers",
                group: "",
                version: "v1",
                kind: "Pod",
                verbs: &["get", "patch", "update"],
            },
        ]
    ),
    res!(
        "",
        "v1",
        "persistentvolumeclaims",
        "persistentvolumeclaim",
        "PersistentVolumeClaim",
        true,
        &["pvc"],
        NONE,
        true,
        &[STATUS]
    ),
    res!(
        "",
        "v1",
        "events",
        "event",
        "Event",
        true,
        &["ev"],
        NONE,
        false,
        &[]
    ),
    res!(
        "",
        "v1",
        "configmaps",
        "configmap",
        "ConfigMap",
        true,
        &["cm"],
        NONE,
        false,
        &[]
    ),
    res!(
        "",
        "v1",
        "secrets",
        "secret",
        "Secret",
        true,
        NONE,
        NONE,
        false,
        &[]
    ),
    res!(
        "",
        "v1",
        "serviceaccounts",
        "serviceaccount",
        "ServiceAccount",
        true,
        &["sa"],
        NONE,
        false,
        &[SubDef {
            name: "token",
            group: "authentication.k8s.io",
            version: "v1",
            kind: "TokenRequest",
            verbs: &["create"],
        }]
    ),
    res!(
        "",
        "v1",
        "services",
        "service",
        "Service",
        true,
        &["svc"],
        ALL,
        true,
        &[STATUS]
    ),
    res!(
        "apps",
        "v1",
        "deployments",
        "deployment",
        "Deployment",
        true,
        &["deploy"],
        ALL,
        true,
        &[STATUS, SCALE]
    ),
    res!(
        "apps",
        "v1",
        "replicasets",
        "replicaset",
        "ReplicaSet",
        true,
        &["rs"],
        ALL,
        true,
        &[STATUS, SCALE]
    ),
    res!(
        "apps",
        "v1",
        "statefulsets",
        "statefulset",
        "StatefulSet",
        true,
        &["sts"],
        ALL,
        true,
        &[STATUS, SCALE]
    ),
    res!(
        "apps",
        "v1",
        "daemonsets",
        "daemonset",
        "DaemonSet",
        true,
        &["ds"],
        ALL,
        true,
        &[STATUS]
    ),
    res!(
        "apps",
        "v1",
        "controllerrevisions",
        "controllerrevision",
        "ControllerRevision",
        true,
        NONE,
        NONE,
        false,
        &[]
    ),
    res!(
        "batch",
        "v1",
        "jobs",
        "job",
        "Job",
        true,
        NONE,
        ALL,
        true,
        &[STATUS]
    ),
    res!(
        "autoscaling",
        "v2",
        "horizontalpodautoscalers",
        "horizontalpodautoscaler",
        "HorizontalPodAutoscaler",
        true,
        &["hpa"],
        ALL,
        true,
        &[STATUS]
    ),
    res!(
        "policy",
        "v1",
        "poddisruptionbudgets",
        "poddisruptionbudget",
        "PodDisruptionBudget",
        true,
        &["pdb"],
        NONE,
        true,
        &[STATUS]
    ),
    res!(
        "storage.k8s.io",
        "v1",
        "storageclasses",
        "storageclass",
        "StorageClass",
        false,
        &["sc"],
        NONE,
        false,
        &[]
    ),
    res!(
        "networking.k8s.io",
        "v1",
        "networkpolicies",
        "networkpolicy",
        "NetworkPolicy",
        true,
        &["netpol"],
        NONE,
        false,
        &[]
    ),
    // The CSI external-snapshotter's CRDs, served as if installed.
    res!(
        "snapshot.storage.k8s.io",
        "v1",
        "volumesnapshotclasses",
        "volumesnapshotclass",
        "VolumeSnapshotClass",
        false,
        &["vsclass", "vsclasses"],
        NONE,
        false,
        &[]
    ),
    res!(
        "snapshot.storage.k8s.io",
        "v1",
        "volumesnapshots",
        "volumesnapshot",
        "VolumeSnapshot",
        true,
        &["vs"],
        NONE,
        true,
        &[STATUS]
    ),
    res!(
        "snapshot.storage.k8s.io",
        "v1",
        "volumesnapshotcontents",
        "volumesnapshotcontent",
        "VolumeSnapshotContent",
        false,
        &["vsc", "vscs"],
        NONE,
        true,
        &[STATUS]
    ),
    res!(
        "coordination.k8s.io",
        "v1",
        "leases",
        "lease",
        "Lease",
        true,
        NONE,
        NONE,
        false,
        &[]
    ),
    res!(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "customresourcedefinition",
        "CustomResourceDefinition",
        false,
        &["crd", "crds"],
        &["api-extensions"],
        true,
        &[STATUS]
    ),
    res!(
        "rbac.authorization.k8s.io",
        "v1",
        "roles",
        "role",
        "Role",
        true,
        NONE,
        NONE,
        false,
        &[]
    ),
    res!(
        "rbac.authorization.k8s.io",
        "v1",
        "rolebindings",
        "rolebinding",
        "RoleBinding",
        true,
        NONE,
        NONE,
        false,
        &[]
    ),
    res!(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterroles",
        "clusterrole",
        "ClusterRole",
        false,
        NONE,
        NONE,
        false,
        &[]
    ),
    res!(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterrolebindings",
        "clusterrolebinding",
        "ClusterRoleBinding",
        false,
        NONE,
        NONE,
        false,
        &[]
    ),
    review(
        "authorization.k8s.io",
        "subjectaccessreviews",
        "subjectaccessreview",
        "SubjectAccessReview",
        false,
    ),
    review(
        "authorization.k8s.io",
        "selfsubjectaccessreviews",
        "selfsubjectaccessreview",
        "SelfSubjectAccessReview",
        false,
    ),
    review(
        "authorization.k8s.io",
        "localsubjectaccessreviews",
        "localsubjectaccessreview",
        "LocalSubjectAccessReview",
        true,
    ),
    review(
        "authentication.k8s.io",
        "selfsubjectreviews",
        "selfsubjectreview",
        "SelfSubjectReview",
        false,
    ),
];

/// The resource served at `group/version/plural`, if any.
pub fn lookup(group: &str, version: &str, plural: &str) -> Option<&'static ResourceDef> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The resource stored under `plural` (plurals are unique in this table).
pub fn by_plural(plural: &str) -> Option<&'static ResourceDef> {
    RESOURCES.iter().find(|r| r.plural == plural)
}

/// The resource of `kind` (kinds are unique in this table).
pub fn by_kind(kind: &str) -> Option<&'static ResourceDef> {
    RESOURCES.iter().find(|r| r.kind == kind)
}

/// Distinct `(group, version)` pairs of `defs` in discovery order, core first.
pub fn group_versions(defs: &[&'static ResourceDef]) -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in defs {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plurals_and_kinds_are_unique() {
        for (i, a) in RESOURCES.iter().enumerate() {
            for b in &RESOURCES[i + 1..] {
                assert_ne!(a.plural, b.plural);
                assert_ne!(a.kind, b.kind);
            }
        }
    }
}
