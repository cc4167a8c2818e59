//! The cluster's own record of the writes clients made through its API (create, update,
//! patch, delete, evictions, dry runs included): what tests read to tell what a client
//! changed and when, independent of what the client says about itself. Controllers write
//! straight into the store and are not in it, so a pod becoming Ready never shows up here.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

/// Writes kept; beyond, the oldest are dropped (and counted), so a long-running cluster's
/// memory stays bounded (with [`BODY_KEPT`], a few tens of MiB at most).
pub const WRITES_KEPT: usize = 100_000;
/// Bytes of each request body kept: enough to tell which change a write carried (the
/// replicas of a scale, the annotation of a restart), not the whole object.
pub const BODY_KEPT: usize = 256;

/// One write request, as the API server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// `create`, `update`, `patch`, `delete` or `deletecollection`.
    pub verb: &'static str,
    /// Plural resource, with its subresource if any (`deployments/scale`, `pods/eviction`).
    pub resource: String,
    /// Empty for cluster-scoped resources.
    pub namespace: String,
    /// Empty for a create or a deletecollection that names none.
    pub name: String,
    /// `dryRun=All`: answered, nothing stored.
    pub dry_run: bool,
    /// The user the request acted as, after impersonation (`admin` without credentials,
    /// `system:serviceaccount:NS:NAME` for a ServiceAccount token).
    pub user: String,
    /// The HTTP status of the answer (an injected fault's included).
    pub status: u16,
    /// When the request arrived and when it was answered.
    pub started: Instant,
    pub finished: Instant,
    /// The same two moments on the wall clock, for readers in another process.
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// The first [`BODY_KEPT`] bytes of the request body (lossy UTF-8).
    pub body: String,
}

impl Write {
    /// Whether the write changed the cluster: not a dry run, and answered with success.
    pub fn applied(&self) -> bool {
        !self.dry_run && (200..300).contains(&self.status)
    }

    /// The write as JSON, as `GET /sim/v1/writes` serves it.
    pub fn to_json(&self) -> Value {
        json!({
            "verb": self.verb,
            "resource": self.resource,
            "namespace": self.namespace,
            "name": self.name,
            "dryRun": self.dry_run,
            "user": self.user,
            "status": self.status,
            "startedAt": self.started_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "finishedAt": self.finished_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "body": self.body,
        })
    }

    /// The first [`BODY_KEPT`] bytes of `body`, as text.
    pub fn body_prefix(body: &[u8]) -> String {
        String::from_utf8_lossy(&body[..body.len().min(BODY_KEPT)]).into_owned()
    }

    /// Whether it addressed `resource` (a bare plural also matches its subresources),
    /// `namespace` and `name`.
    pub fn is_on(&self, resource: &str, namespace: &str, name: &str) -> bool {
        let plural = self.resource.split('/').next().unwrap_or_default();
        (self.resource == resource || plural == resource)
            && self.namespace == namespace
            && self.name == name
    }
}

/// Cloneable handle to the record.
#[derive(Debug, Clone, Default)]
pub struct Writes {
    inner: Arc<Mutex<Record>>,
}

#[derive(Debug, Default)]
struct Record {
    writes: VecDeque<Write>,
    dropped: u64,
}

impl Writes {
    pub fn record(&self, write: Write) {
        let mut record = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if record.writes.len() == WRITES_KEPT {
            record.writes.pop_front();
            record.dropped += 1;
        }
        record.writes.push_back(write);
    }

    /// Every write kept, oldest first.
    pub fn all(&self) -> Vec<Write> {
        let record = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        record.writes.iter().cloned().collect()
    }

    /// The writes kept that addressed `resource` `namespace`/`name` (see [`Write::is_on`]).
    pub fn on(&self, resource: &str, namespace: &str, name: &str) -> Vec<Write> {
        let record = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        record
            .writes
            .iter()
            .filter(|w| w.is_on(resource, namespace, name))
            .cloned()
            .collect()
    }

    /// How many writes were dropped from the front of the record.
    pub fn dropped(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_write(verb: &'static str, resource: &str, name: &str, status: u16) -> Write {
        let now = Instant::now();
        Write {
            verb,
            resource: resource.to_string(),
            namespace: "default".to_string(),
            name: name.to_string(),
            dry_run: false,
            user: "admin".to_string(),
            status,
            started: now,
            finished: now,
            started_at: Utc::now(),
            finished_at: Utc::now(),
            body: String::new(),
        }
    }

    #[test]
    fn a_plural_matches_its_subresources_and_only_successes_count_as_applied() {
        let writes = Writes::default();
        writes.record(mk_write("patch", "deployments/scale", "web", 200));
        writes.record(mk_write("patch", "deployments", "api", 409));
        let on_web = writes.on("deployments", "default", "web");
        assert_eq!(on_web.len(), 1);
        assert!(on_web[0].applied());
        assert!(!writes.on("deployments", "default", "api")[0].applied());
        assert!(writes.on("deployments/scale", "default", "api").is_empty());
    }

    #[test]
    fn the_record_keeps_the_newest_writes_and_counts_the_dropped() {
        let writes = Writes::default();
        for i in 0..WRITES_KEPT + 3 {
            writes.record(mk_write("create", "pods", &i.to_string(), 201));
        }
        assert_eq!(writes.all().len(), WRITES_KEPT);
        assert_eq!(writes.dropped(), 3);
        assert_eq!(writes.all()[0].name, "3");
    }
}
