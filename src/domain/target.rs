//! The object an execution works on.

/// The object an action works on, after resolution (namespace defaulted, kind defaulted).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Target {
    /// Kubeconfig context; empty = the default cluster.
    pub cluster: String,
    pub namespace: String,
    pub kind: String,
    pub name: String,
}

impl Target {
    /// `namespace/kind/name` (`kind/name` for cluster-scoped kinds), lower-case kind, as used
    /// in summaries and lock keys.
    pub fn object_ref(&self) -> String {
        if self.namespace.is_empty() {
            format!("{}/{}", self.kind.to_lowercase(), self.name)
        } else {
            format!(
                "{}/{}/{}",
                self.namespace,
                self.kind.to_lowercase(),
                self.name
            )
        }
    }
}
