//! The volume side of PVCs: binding (a made-up volume `pvc-<uid>`) and expansion, where
//! `status.capacity` follows a larger `spec.resources.requests.storage` after a delay.
//! Whether a resize is allowed at all is decided at admission (see `admission.rs`).

use std::time::Instant;

use serde_json::{json, Value};

use super::{emit_event, is_terminating, set_condition, sim_elapsed};
use crate::sim::admission::parse_quantity;
use crate::sim::resources::by_plural;
use crate::sim::store::{at, set_at, str_at, State};

/// Simulated seconds to provision and bind a new claim.
const BIND_SECS: f64 = 1.0;
/// Simulated seconds an expansion takes (controller + node filesystem resize).
const RESIZE_SECS: f64 = 5.0;

pub fn run(st: &mut State) {
    let Some(def) = by_plural("persistentvolumeclaims") else {
        return;
    };
    let now = Instant::now();
    for pvc in st.list("persistentvolumeclaims", None) {
        if is_terminating(&pvc) {
            continue;
        }
        let uid = str_at(&pvc, "/metadata/uid").to_string();
        let want = str_at(&pvc, "/spec/resources/requests/storage").to_string();
        let sc = str_at(&pvc, "/spec/storageClassName").to_string();
        let started = *st.rt.pvc_timer.entry(uid.clone()).or_insert(now);
        if str_at(&pvc, "/status/phase") != "Bound" {
            if sim_elapsed(started, st.speed) < BIND_SECS {
                continue;
            }
            let volume = format!("pvc-{uid}");
            let mut new = (*pvc).clone();
            set_at(&mut new, "/spec/volumeName", json!(volume));
            set_at(&mut new, "/status/phase", json!("Bound"));
            set_at(
                &mut new,
                "/status/accessModes",
                at(&pvc, "/spec/accessModes")
                    .cloned()
                    .unwrap_or(json!(["ReadWriteOnce"])),
            );
            set_at(&mut new, "/status/capacity/storage", json!(want));
            let out = st.replace(def, new);
            st.rt.pvc_timer.remove(&uid);
            let msg = format!("Successfully provisioned volume {volume} using storage class {sc}");
            emit_event(
                st,
                &out,
                "Normal",
                "ProvisioningSucceeded",
                &msg,
                "persistentvolume-controller",
            );
            continue;
        }
        let have = str_at(&pvc, "/status/capacity/storage").to_string();
        let bigger = match (parse_quantity(&want), parse_quantity(&have)) {
            (Some(w), Some(h)) => w > h,
            _ => false,
        };
        if !bigger {
            st.rt.pvc_timer.remove(&uid);
            continue;
        }
        let volume = str_at(&pvc, "/spec/volumeName").to_string();
        let resizing = pvc
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|cs| cs.iter().any(|c| str_at(c, "/type") == "Resizing"));
        if !resizing {
            st.rt.pvc_timer.insert(uid.clone(), now);
            let mut new = (*pvc).clone();
            set_condition(&mut new, "Resizing", "True", "", "", false);
            set_at(&mut new, "/status/allocatedResources/storage", json!(want));
            let out = st.replace(def, new);
            emit_event(
                st,
                &out,
                "Normal",
                "Resizing",
                &format!("External resizer is resizing volume {volume}"),
                "external-resizer",
            );
            continue;
        }
        if sim_elapsed(started, st.speed) < RESIZE_SECS {
            continue;
        }
        let mut new = (*pvc).clone();
        set_at(&mut new, "/status/capacity/storage", json!(want));
        if let Some(s) = new.get_mut("status").and_then(Value::as_object_mut) {
            s.remove("conditions");
        }
        let out = st.replace(def, new);
        st.rt.pvc_timer.remove(&uid);
        let msg = format!("MountVolume.NodeExpandVolume succeeded for volume \"{volume}\"");
        emit_event(
            st,
            &out,
            "Normal",
            "FileSystemResizeSuccessful",
            &msg,
            "kubelet",
        );
    }
}
