//! What an action would do: a [`Plan`] of [`Change`]s, each an object before and after as a
//! diff should show it. Most actions change one object, so a plan is usually
//! `Plan::single(Change::update(..))`.

use serde::Serialize;
use serde_json::{json, Value};

/// The change an action would make to one object.
#[derive(Debug, Clone)]
pub struct Change {
    /// `namespace/kind/name`.
    pub object: String,
    pub summary: String,
    pub before: Value,
    pub after: Value,
}

impl Change {
    /// `object` goes from `before` to `after` (typically the API server's dry-run answer).
    pub fn update(
        object: impl Into<String>,
        summary: impl Into<String>,
        before: &impl Serialize,
        after: &impl Serialize,
    ) -> Self {
        Change {
            object: object.into(),
            summary: summary.into(),
            before: comparable(before),
            after: comparable(after),
        }
    }

    /// `object` comes into being as `after`.
    pub fn create(
        object: impl Into<String>,
        summary: impl Into<String>,
        after: &impl Serialize,
    ) -> Self {
        Change {
            object: object.into(),
            summary: summary.into(),
            before: Value::Null,
            after: comparable(after),
        }
    }

    /// `object`, now `before`, goes away (deleted or evicted).
    pub fn delete(
        object: impl Into<String>,
        summary: impl Into<String>,
        before: &impl Serialize,
    ) -> Self {
        Change {
            object: object.into(),
            summary: summary.into(),
            before: comparable(before),
            after: Value::Null,
        }
    }

    /// RFC 6902 patch from `before` to `after`.
    pub fn patch(&self) -> Value {
        serde_json::to_value(json_patch::diff(&self.before, &self.after)).unwrap_or(Value::Null)
    }
}

/// What an action would do, computed from the cluster's current state; mutations are checked
/// with the API server's `dryRun=All`, so nothing changes.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub summary: String,
    pub changes: Vec<Change>,
    pub warnings: Vec<String>,
}

impl Plan {
    /// A plan of one change, summed up by the change's own summary.
    pub fn single(change: Change) -> Self {
        Plan {
            summary: change.summary.clone(),
            changes: vec![change],
            warnings: Vec::new(),
        }
    }

    /// As the APIs show it: summary, each change's before/after with its RFC 6902 patch, and
    /// the warnings.
    pub fn to_json(&self) -> Value {
        json!({
            "summary": self.summary,
            "changes": self.changes.iter().map(|c| json!({
                "object": c.object,
                "summary": c.summary,
                "before": c.before,
                "after": c.after,
                "patch": c.patch(),
            })).collect::<Vec<_>>(),
            "warnings": self.warnings,
        })
    }

    /// The same plan with `warnings` added.
    pub fn with_warnings(mut self, warnings: Vec<String>) -> Self {
        self.warnings.extend(warnings);
        self
    }
}

/// An object as a before/after diff should show it: metadata a user chose and the spec; no
/// status, no server bookkeeping (uid, resourceVersion, managedFields, timestamps).
fn comparable(object: &impl Serialize) -> Value {
    let mut value = serde_json::to_value(object).unwrap_or(Value::Null);
    if let Some(map) = value.as_object_mut() {
        map.remove("status");
        if let Some(meta) = map.get_mut("metadata").and_then(Value::as_object_mut) {
            for key in [
                "managedFields",
                "resourceVersion",
                "uid",
                "creationTimestamp",
                "generation",
            ] {
                meta.remove(key);
            }
        }
    }
    value
}
