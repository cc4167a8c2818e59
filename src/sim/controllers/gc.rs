//! Garbage collection through ownerReferences (dependents of a vanished owner are deleted;
//! `Foreground` owners wait for their dependents), namespace termination, and the
//! `default` ServiceAccount every namespace gets.

use std::collections::{HashMap, HashSet};

use serde_json::{json, Value};

use super::is_terminating;
use crate::sim::api::{self, DeleteOpts};
use crate::sim::resources::{by_plural, ResourceDef};
use crate::sim::store::{str_at, State};

const FOREGROUND: &str = "foregroundDeletion";

type Dependent = (&'static ResourceDef, String, String, bool);

pub fn run(st: &mut State) {
    namespaces(st);
    let mut uids: HashSet<String> = HashSet::new();
    let mut dependents: HashMap<String, Vec<Dependent>> = HashMap::new();
    let mut foreground: Vec<(&'static ResourceDef, Value)> = Vec::new();
    for def in st.defs() {
        if def.plural == "events" {
            continue;
        }
        for o in st.list(def.plural, None) {
            uids.insert(str_at(&o, "/metadata/uid").to_string());
            if let Some(refs) = o
                .pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
            {
                for r in refs {
                    dependents
                        .entry(str_at(r, "/uid").to_string())
                        .or_default()
                        .push((
                            def,
                            str_at(&o, "/metadata/namespace").to_string(),
                            str_at(&o, "/metadata/name").to_string(),
                            is_terminating(&o),
                        ));
                }
            }
            let fg = o
                .pointer("/metadata/finalizers")
                .and_then(Value::as_array)
                .is_some_and(|f| f.contains(&json!(FOREGROUND)));
            if fg && is_terminating(&o) {
                foreground.push((def, (*o).clone()));
            }
        }
    }
    // Forget controller bookkeeping of objects that no longer exist.
    st.rt.pod_seen.retain(|k, _| uids.contains(k));
    st.rt.pod_term.retain(|k, _| uids.contains(k));
    st.rt.next_restart.retain(|k, _| uids.contains(k));
    st.rt.progress.retain(|k, _| uids.contains(k));
    st.rt.unschedulable.retain(|k| uids.contains(k));
    st.rt.pvc_timer.retain(|k, _| uids.contains(k));
    // Dependents whose owners are all gone.
    for (owner, deps) in &dependents {
        if uids.contains(owner) {
            continue;
        }
        for (def, ns, name, terminating) in deps {
            if *terminating {
                continue;
            }
            let Some(obj) = st.get(def.plural, ns, name).cloned() else {
                continue;
            };
            let all_gone = obj
                .pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .is_some_and(|rs| rs.iter().all(|r| !uids.contains(str_at(r, "/uid"))));
            if all_gone {
                let _ = api::delete(st, def, ns, name, &DeleteOpts::default(), false);
            }
        }
    }
    // Owners deleted in the foreground: delete dependents first, then the owner.
    for (def, o) in foreground {
        let uid = str_at(&o, "/metadata/uid");
        let deps = dependents.get(uid).cloned().unwrap_or_default();
        if deps.is_empty() {
            let mut new = o.clone();
            if let Some(f) = new
                .pointer_mut("/metadata/finalizers")
                .and_then(Value::as_array_mut)
            {
                f.retain(|x| x != FOREGROUND);
            }
            let _ = api::commit_update(st, def, &o, new, false);
            continue;
        }
        for (ddef, ns, name, terminating) in deps {
            if terminating {
                continue;
            }
            let opts = DeleteOpts {
                propagation: Some("Foreground".into()),
                ..Default::default()
            };
            let _ = api::delete(st, ddef, &ns, &name, &opts, false);
        }
    }
}

/// Terminating namespaces lose their content, then disappear; active ones get a `default`
/// ServiceAccount.
fn namespaces(st: &mut State) {
    let (Some(ns_def), Some(sa_def)) = (by_plural("namespaces"), by_plural("serviceaccounts"))
    else {
        return;
    };
    for ns in st.list("namespaces", None) {
        let name = str_at(&ns, "/metadata/name").to_string();
        if !is_terminating(&ns) {
            if st.get("serviceaccounts", &name, "default").is_none() {
                let sa = json!({"metadata": {"name": "default", "namespace": name}});
                let _ = api::create(st, sa_def, Some(&name), sa, false);
            }
            continue;
        }
        let mut left = 0;
        for def in st.defs().into_iter().filter(|d| d.namespaced) {
            for o in st.list(def.plural, Some(&name)) {
                left += 1;
                if !is_terminating(&o) {
                    let _ = api::delete(
                        st,
                        def,
                        &name,
                        str_at(&o, "/metadata/name"),
                        &DeleteOpts::default(),
                        false,
                    );
                }
            }
        }
        if left == 0 {
            st.remove(ns_def, "", &name);
        }
    }
}
