//! The CSI snapshot controller: a VolumeSnapshot of a bound claim becomes ready after a
//! short delay, with a cluster-scoped VolumeSnapshotContent bound to it (`snapcontent-<uid>`),
//! `restoreSize` the claim's capacity; without the claim or a snapshot class (named, or the
//! one annotated default) it reports `status.error` and is retried, as the real one does.

use std::time::Instant;

use serde_json::{json, Value};

use super::{emit_event, is_terminating, sim_elapsed};
use crate::sim::api;
use crate::sim::resources::by_plural;
use crate::sim::store::{at, now_str, str_at, State};

/// Simulated seconds a snapshot takes to be cut and become ready.
const SNAPSHOT_SECS: f64 = 3.0;
const COMPONENT: &str = "snapshot-controller";
const DEFAULT_CLASS: &str = "snapshot.storage.kubernetes.io/is-default-class";

pub fn run(st: &mut State) {
    let (Some(def), Some(content_def)) = (
        by_plural("volumesnapshots"),
        by_plural("volumesnapshotcontents"),
    ) else {
        return;
    };
    let now = Instant::now();
    for vs in st.list("volumesnapshots", None) {
        if is_terminating(&vs) || at(&vs, "/status/readyToUse") == Some(&Value::Bool(true)) {
            continue;
        }
        let uid = str_at(&vs, "/metadata/uid").to_string();
        let ns = str_at(&vs, "/metadata/namespace").to_string();
        let name = str_at(&vs, "/metadata/name").to_string();
        let claim = str_at(&vs, "/spec/source/persistentVolumeClaimName").to_string();
        let class = match str_at(&vs, "/spec/volumeSnapshotClassName") {
            "" => st
                .list("volumesnapshotclasses", None)
                .iter()
                .find(|c| {
                    str_at(
                        c,
                        &format!("/metadata/annotations/{}", DEFAULT_CLASS.replace('/', "~1")),
                    ) == "true"
                })
                .map(|c| (**c).clone()),
            named => st
                .get("volumesnapshotclasses", "", named)
                .map(|c| (**c).clone()),
        };
        let pvc = st
            .get("persistentvolumeclaims", &ns, &claim)
            .map(|p| (**p).clone());
        let problem = match (&pvc, &class) {
            (None, _) => Some(format!(
                "error getting handle for DataSource Type VolumeSnapshot by Name {name}: failed to get input parameters to create snapshot {name}: \"the PVC {claim} is not yet bound to a PV, will not attempt to take a snapshot\""
            )),
            (Some(p), _) if str_at(p, "/status/phase") != "Bound" => Some(format!(
                "failed to get input parameters to create snapshot {name}: \"the PVC {claim} is not yet bound to a PV, will not attempt to take a snapshot\""
            )),
            (_, None) => Some(match str_at(&vs, "/spec/volumeSnapshotClassName") {
                "" => format!(
                    "failed to get input parameters to create snapshot {name}: \"cannot find default snapshot class\""
                ),
                named => format!(
                    "failed to get input parameters to create snapshot {name}: failed to retrieve snapshot class {named} from the informer: volumesnapshotclass.snapshot.storage.k8s.io \"{named}\" not found"
                ),
            }),
            _ => None,
        };
        if let Some(message) = problem {
            if str_at(&vs, "/status/error/message") != message {
                let mut new = (*vs).clone();
                new["status"] = json!({
                    "readyToUse": false,
                    "error": { "message": message, "time": now_str() },
                });
                let out = st.replace(def, new);
                emit_event(
                    st,
                    &out,
                    "Warning",
                    "SnapshotCreationFailed",
                    &message,
                    COMPONENT,
                );
            }
            continue;
        }
        let (Some(pvc), Some(class)) = (pvc, class) else {
            continue;
        };
        let started = *st.rt.pvc_timer.entry(uid.clone()).or_insert_with(|| now);
        if started == now {
            emit_event(
                st,
                &vs,
                "Normal",
                "CreatingSnapshot",
                &format!("Waiting for a snapshot {ns}/{name} to be created by the CSI driver."),
                COMPONENT,
            );
        }
        if sim_elapsed(started, st.speed) < SNAPSHOT_SECS {
            continue;
        }
        st.rt.pvc_timer.remove(&uid);
        let content_name = format!("snapcontent-{uid}");
        let size = str_at(&pvc, "/status/capacity/storage").to_string();
        let created = now_str();
        let driver = str_at(&class, "/driver").to_string();
        let content = json!({
            "apiVersion": "snapshot.storage.k8s.io/v1",
            "kind": "VolumeSnapshotContent",
            "metadata": { "name": content_name },
            "spec": {
                "deletionPolicy": str_at(&class, "/deletionPolicy"),
                "driver": driver,
                "source": { "volumeHandle": str_at(&pvc, "/spec/volumeName") },
                "volumeSnapshotClassName": str_at(&class, "/metadata/name"),
                "volumeSnapshotRef": {
                    "apiVersion": "snapshot.storage.k8s.io/v1",
                    "kind": "VolumeSnapshot",
                    "name": name,
                    "namespace": ns,
                    "uid": uid,
                },
            },
            "status": {
                "readyToUse": true,
                "restoreSize": crate::sim::admission::parse_quantity(&size).map_or(0, |b| b as i64),
                "snapshotHandle": format!("snapshot-{uid}"),
                "creationTime": chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0),
            },
        });
        if st
            .get("volumesnapshotcontents", "", &content_name)
            .is_none()
        {
            let _ = api::create(st, content_def, None, content, false);
        }
        let mut new = (*vs).clone();
        new["spec"]["volumeSnapshotClassName"] = json!(str_at(&class, "/metadata/name"));
        new["status"] = json!({
            "boundVolumeSnapshotContentName": content_name,
            "creationTime": created,
            "readyToUse": true,
            "restoreSize": size,
        });
        let out = st.replace(def, new);
        emit_event(
            st,
            &out,
            "Normal",
            "SnapshotCreated",
            &format!("Snapshot {ns}/{name} was successfully created by the CSI driver."),
            COMPONENT,
        );
        emit_event(
            st,
            &out,
            "Normal",
            "SnapshotReady",
            &format!("Snapshot {ns}/{name} is ready to use."),
            COMPONENT,
        );
    }
}
