//! The object store: every object as JSON, one global monotonic `resourceVersion`, and the
//! watch fan-out (a bounded history for resuming plus a broadcast channel for live events).
//!
//! One mutex guards everything. API handlers and controller ticks take it briefly and do
//! only in-memory work under it; watch events are broadcast while it is held, so a watcher
//! that reads the history and subscribes under the same lock sees no gap and no duplicate.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use serde_json::{json, Value};
use tokio::sync::broadcast;

use super::controllers::Runtime;
use super::resources::{ResourceDef, RESOURCES};

/// Kinds with a spec even when a created object leaves it out (a generation from the start).
const HAS_SPEC: &[&str] = &[
    "Deployment",
    "ReplicaSet",
    "StatefulSet",
    "DaemonSet",
    "Job",
    "Pod",
    "Service",
    "PersistentVolumeClaim",
    "HorizontalPodAutoscaler",
    "PodDisruptionBudget",
    "NetworkPolicy",
    "VolumeSnapshot",
];
/// `(namespace, name)`; the namespace is empty for cluster-scoped objects.
pub type ObjKey = (String, String);

/// Watch history kept for resuming a watch from an older `resourceVersion`; older resumes get
/// `410 Gone` and relist, as against a real API server after etcd compaction.
const HISTORY_CAPACITY: usize = 20_000;

/// Live-event buffer per watcher; a watcher that falls this far behind is closed with 410
/// (it relists) rather than slowing anyone else down.
const BROADCAST_CAPACITY: usize = 16_384;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, as watchers receive it.
#[derive(Debug)]
pub struct WatchEvent {
    pub rv: u64,
    pub plural: &'static str,
    pub etype: EventType,
    pub object: Arc<Value>,
    /// The object before a MODIFIED change, so a selector watch can turn the change into
    /// ADDED (starts matching) or DELETED (stops matching) as the real server does.
    pub prev: Option<Arc<Value>>,
}

/// Everything the simulated cluster holds. See the module doc for the locking model.
pub struct State {
    rv: u64,
    objects: HashMap<&'static str, BTreeMap<ObjKey, Arc<Value>>>,
    history: VecDeque<Arc<WatchEvent>>,
    /// Highest resourceVersion dropped from `history`; resuming at or below it is too old.
    history_floor: u64,
    tx: broadcast::Sender<Arc<WatchEvent>>,
    /// Divisor of every simulated delay (1.0 = demo pace).
    pub speed: f64,
    /// Controllers' private bookkeeping (timers, event de-duplication).
    pub rt: Runtime,
    /// The client whose write is being served, for `managedFields`; none for controllers.
    pub writer: Option<crate::sim::api::Writer>,
    /// Types registered by this cluster's CustomResourceDefinitions (`crd.rs`).
    pub custom: Vec<crate::sim::crd::CustomType>,
    /// ServiceAccount tokens issued through TokenRequest (`auth.rs`).
    pub tokens: crate::sim::auth::Tokens,
}

/// The backlog of a resumed watch and the receiver for what follows it.
pub type WatchStart = (Vec<Arc<WatchEvent>>, broadcast::Receiver<Arc<WatchEvent>>);

/// `resourceVersion` too old to resume from.
#[derive(Debug)]
pub struct Expired {
    pub requested: u64,
    pub oldest: u64,
}

pub fn now_str() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

pub fn key_of(obj: &Value) -> ObjKey {
    (
        str_at(obj, "/metadata/namespace").to_string(),
        str_at(obj, "/metadata/name").to_string(),
    )
}

/// `Value::pointer` without its per-segment allocations (controllers call this for every
/// pod on every tick). Handles `~1`/`~0` escapes and array indices like the original.
pub fn at<'a>(v: &'a Value, pointer: &str) -> Option<&'a Value> {
    let Some(rest) = pointer.strip_prefix('/') else {
        return pointer.is_empty().then_some(v);
    };
    let mut cur = v;
    for seg in rest.split('/') {
        cur = match cur {
            Value::Object(m) => {
                if seg.contains('~') {
                    m.get(&seg.replace("~1", "/").replace("~0", "~"))?
                } else {
                    m.get(seg)?
                }
            }
            Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// The string at a JSON pointer, or `""`.
pub fn str_at<'a>(v: &'a Value, ptr: &str) -> &'a str {
    at(v, ptr).and_then(Value::as_str).unwrap_or("")
}

/// The integer at a JSON pointer, or `default`.
pub fn int_at(v: &Value, ptr: &str, default: i64) -> i64 {
    at(v, ptr).and_then(Value::as_i64).unwrap_or(default)
}

/// Sets `v[ptr] = val`, creating intermediate objects (non-objects on the way are replaced).
pub fn set_at(v: &mut Value, ptr: &str, val: Value) {
    let mut cur = v;
    let parts: Vec<&str> = ptr.trim_start_matches('/').split('/').collect();
    for (i, p) in parts.iter().enumerate() {
        if !cur.is_object() {
            *cur = json!({});
        }
        let Some(m) = cur.as_object_mut() else { return };
        let key = p.replace("~1", "/").replace("~0", "~");
        if i == parts.len() - 1 {
            m.insert(key, val);
            return;
        }
        cur = m.entry(key).or_insert_with(|| json!({}));
    }
}

impl State {
    pub fn new(speed: f64) -> Self {
        let (tx, _) = broadcast::channel(BROADCAST_CAPACITY);
        State {
            rv: 1,
            objects: RESOURCES
                .iter()
                .map(|r| (r.plural, BTreeMap::new()))
                .collect(),
            history: VecDeque::new(),
            history_floor: 0,
            tx,
            speed,
            rt: Runtime::default(),
            writer: None,
            custom: Vec::new(),
            tokens: Default::default(),
        }
    }

    /// Starts serving objects under `plural` (a custom type being registered).
    pub fn open_plural(&mut self, plural: &'static str) {
        self.objects.entry(plural).or_default();
    }

    /// Stops serving `plural`, removing every object of it (each with a DELETED event).
    pub fn close_plural(&mut self, def: &'static ResourceDef) {
        for obj in self.list(def.plural, None) {
            let (ns, name) = key_of(&obj);
            self.remove(def, &ns, &name);
        }
        self.objects.remove(def.plural);
    }

    pub fn rv(&self) -> u64 {
        self.rv
    }

    pub fn get(&self, plural: &str, ns: &str, name: &str) -> Option<&Arc<Value>> {
        self.objects
            .get(plural)?
            .get(&(ns.to_string(), name.to_string()))
    }

    /// Objects of a type, in one namespace or all; sorted by namespace then name.
    pub fn list(&self, plural: &str, ns: Option<&str>) -> Vec<Arc<Value>> {
        let Some(m) = self.objects.get(plural) else {
            return vec![];
        };
        match ns {
            None => m.values().cloned().collect(),
            Some(ns) => m
                .range((ns.to_string(), String::new())..)
                .take_while(|(k, _)| k.0 == ns)
                .map(|(_, v)| v.clone())
                .collect(),
        }
    }

    pub fn count(&self, plural: &str) -> usize {
        self.objects.get(plural).map_or(0, BTreeMap::len)
    }

    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn emit(
        &mut self,
        plural: &'static str,
        etype: EventType,
        object: Arc<Value>,
        prev: Option<Arc<Value>>,
        rv: u64,
    ) {
        let ev = Arc::new(WatchEvent {
            rv,
            plural,
            etype,
            object,
            prev,
        });
        if self.history.len() >= HISTORY_CAPACITY {
            if let Some(old) = self.history.pop_front() {
                self.history_floor = old.rv;
            }
        }
        self.history.push_back(ev.clone());
        // No receivers is fine.
        let _ = self.tx.send(ev);
    }

    /// Fills the metadata the server owns on creation: uid, creationTimestamp, and
    /// generation for kinds that have a spec.
    pub fn prepare_new(def: &ResourceDef, obj: &mut Value) {
        set_at(obj, "/apiVersion", json!(def.api_version()));
        set_at(obj, "/kind", json!(def.kind));
        set_at(
            obj,
            "/metadata/uid",
            json!(uuid::Uuid::new_v4().to_string()),
        );
        set_at(obj, "/metadata/creationTimestamp", json!(now_str()));
        // Only kinds with a spec count its generations (ConfigMaps, Secrets… carry none).
        if obj.get("spec").is_some() || def.custom || HAS_SPEC.contains(&def.kind) {
            set_at(obj, "/metadata/generation", json!(1));
        } else if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("generation");
        }
        if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
            m.remove("deletionTimestamp");
            m.remove("deletionGracePeriodSeconds");
            m.remove("selfLink");
        }
    }

    /// Stores a new object (already prepared, defaulted and validated); emits ADDED.
    pub fn insert(&mut self, def: &'static ResourceDef, mut obj: Value) -> Arc<Value> {
        let rv = self.next_rv();
        set_at(&mut obj, "/metadata/resourceVersion", json!(rv.to_string()));
        let key = key_of(&obj);
        let arc = Arc::new(obj);
        if let Some(m) = self.objects.get_mut(def.plural) {
            m.insert(key, arc.clone());
        }
        self.emit(def.plural, EventType::Added, arc.clone(), None, rv);
        arc
    }

    /// Replaces an existing object; emits MODIFIED. Skips the write (no new
    /// resourceVersion, no event) when nothing but the resourceVersion differs.
    pub fn replace(&mut self, def: &'static ResourceDef, mut obj: Value) -> Arc<Value> {
        let key = key_of(&obj);
        let prev = self
            .objects
            .get(def.plural)
            .and_then(|m| m.get(&key))
            .cloned();
        if let Some(old) = &prev {
            set_at(
                &mut obj,
                "/metadata/resourceVersion",
                old.pointer("/metadata/resourceVersion")
                    .cloned()
                    .unwrap_or(Value::Null),
            );
            if **old == obj {
                return old.clone();
            }
        }
        let rv = self.next_rv();
        set_at(&mut obj, "/metadata/resourceVersion", json!(rv.to_string()));
        let arc = Arc::new(obj);
        if let Some(m) = self.objects.get_mut(def.plural) {
            m.insert(key, arc.clone());
        }
        self.emit(def.plural, EventType::Modified, arc.clone(), prev, rv);
        arc
    }

    /// Removes an object for good; emits DELETED carrying a fresh resourceVersion.
    pub fn remove(
        &mut self,
        def: &'static ResourceDef,
        ns: &str,
        name: &str,
    ) -> Option<Arc<Value>> {
        let old = self
            .objects
            .get_mut(def.plural)?
            .remove(&(ns.to_string(), name.to_string()))?;
        let rv = self.next_rv();
        let mut obj = (*old).clone();
        set_at(&mut obj, "/metadata/resourceVersion", json!(rv.to_string()));
        let arc = Arc::new(obj);
        self.emit(def.plural, EventType::Deleted, arc.clone(), None, rv);
        Some(arc)
    }

    /// Events of `plural` after `from` from the history, plus a receiver for everything
    /// after them. Taken under the state lock, so the two join without a gap.
    ///
    /// # Errors
    /// [`Expired`] when `from` predates the retained history.
    pub fn watch_from(&self, plural: &str, from: u64) -> Result<WatchStart, Expired> {
        if from < self.history_floor {
            return Err(Expired {
                requested: from,
                oldest: self.history_floor + 1,
            });
        }
        // History is sorted by rv: binary search for the first event after `from`.
        let start = self.history.partition_point(|e| e.rv <= from);
        let backlog = self
            .history
            .range(start..)
            .filter(|e| e.plural == plural)
            .cloned()
            .collect();
        Ok((backlog, self.tx.subscribe()))
    }

    /// A receiver for live events only.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<WatchEvent>> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::resources::by_plural;

    #[test]
    fn resuming_before_the_retained_history_is_expired() {
        let cm = by_plural("configmaps").unwrap();
        let mut st = State::new(1.0);
        for i in 0..HISTORY_CAPACITY + 10 {
            let mut obj = json!({"metadata": {"name": format!("c{i}"), "namespace": "ns"}});
            State::prepare_new(cm, &mut obj);
            st.insert(cm, obj);
        }
        assert!(st.watch_from("configmaps", 2).is_err());
        let recent = st.rv() - 5;
        let (backlog, _) = st.watch_from("configmaps", recent).unwrap();
        assert_eq!(backlog.len(), 5);
    }

    #[test]
    fn at_matches_json_pointer() {
        let v = json!({"a": {"b/c": [1, {"d": "x"}], "e~f": 2}});
        for p in [
            "",
            "/a",
            "/a/b~1c",
            "/a/b~1c/1/d",
            "/a/e~0f",
            "/a/zz",
            "/a/b~1c/9",
            "/a/b~1c/x",
        ] {
            assert_eq!(at(&v, p), v.pointer(p), "{p}");
        }
    }

    #[test]
    fn writes_bump_the_resource_version_and_noops_do_not() {
        let cm = by_plural("configmaps").unwrap();
        let mut st = State::new(1.0);
        let mut obj = json!({"metadata": {"name": "a", "namespace": "ns"}, "data": {"k": "v"}});
        State::prepare_new(cm, &mut obj);
        let a = st.insert(cm, obj);
        let rv1 = st.rv();
        assert_eq!(str_at(&a, "/metadata/resourceVersion"), rv1.to_string());
        st.replace(cm, (*a).clone());
        assert_eq!(
            st.rv(),
            rv1,
            "a no-op update must not bump the resourceVersion"
        );
        let mut changed = (*a).clone();
        changed["data"]["k"] = json!("w");
        st.replace(cm, changed);
        assert_eq!(st.rv(), rv1 + 1);
        let (backlog, _rx) = st.watch_from("configmaps", 0).unwrap();
        let types: Vec<_> = backlog.iter().map(|e| e.etype).collect();
        assert_eq!(types, vec![EventType::Added, EventType::Modified]);
        st.remove(cm, "ns", "a");
        assert!(st.get("configmaps", "ns", "a").is_none());
        assert_eq!(st.list("configmaps", Some("ns")).len(), 0);
    }
}
