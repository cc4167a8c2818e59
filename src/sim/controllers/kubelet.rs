//! The kubelet of every node at once: starts bound pods after a short delay, crash-loops
//! containers whose image asks for it, finishes graceful deletions, and makes up logs.
//!
//! Image conventions (the tag decides):
//! - `…:crashloop` — the container starts, exits with code 1 and restarts with back-off
//!   forever: never Ready, `restartCount` climbing, waiting reason `CrashLoopBackOff`.
//! - `…:badimage` (or `…:imagepullbackoff`) — the image never pulls: the pod stays Pending
//!   with waiting reason `ImagePullBackOff`.
//! - anything else runs and becomes Ready.
//!
//! And like a real kubelet: a pod waits (ContainerCreating) while a ConfigMap one of its
//! volumes needs does not exist; a container whose command names a file under a ConfigMap
//! mount that the ConfigMap does not hold crash-loops with its runtime's error (`python:
//! can't open file …`, `Error: Cannot find module …`) as its log and termination message.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::scheduler::node_ready;
use super::{condition, emit_event, is_terminating, set_condition, sim_elapsed};
use crate::sim::resources::by_plural;
use crate::sim::store::{at, int_at, now_str, set_at, str_at, State};

/// Simulated seconds from binding to containers running (image already present).
const START_DELAY_SECS: f64 = 2.0;
/// First crash-loop back-off; doubles per restart up to [`MAX_BACKOFF_SECS`], as the kubelet.
const BACKOFF_SECS: f64 = 10.0;
const MAX_BACKOFF_SECS: f64 = 300.0;
/// Simulated seconds a pod with restartPolicy Never/OnFailure runs before it succeeds
/// (Job pods).
const RUN_TO_COMPLETION_SECS: f64 = 5.0;
/// Log lines a container writes per simulated minute after its first few.
const LOG_LINES_PER_MINUTE: f64 = 12.0;
const MAX_LOG_LINES: usize = 2_000;
const COMPONENT: &str = "kubelet";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    Run,
    Crash,
    BadImage,
}

fn behaviour(image: &str) -> Behaviour {
    let tag = image
        .rsplit('/')
        .next()
        .unwrap_or("")
        .split_once(':')
        .map(|x| x.1);
    match tag {
        Some("crashloop") => Behaviour::Crash,
        Some("badimage") | Some("imagepullbackoff") => Behaviour::BadImage,
        _ => Behaviour::Run,
    }
}

pub fn is_ready(p: &Value) -> bool {
    condition(p, "Ready").is_some_and(|c| str_at(c, "/status") == "True")
}

fn containers(p: &Value) -> Vec<Value> {
    at(p, "/spec/containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn hex_id(seed: &str) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(seed.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn backoff(restarts: i64) -> f64 {
    (BACKOFF_SECS * 2f64.powi(restarts.clamp(0, 10) as i32)).min(MAX_BACKOFF_SECS)
}

pub fn run(st: &mut State) {
    let Some(pods_def) = by_plural("pods") else {
        return;
    };
    let now = Instant::now();
    let speed = st.speed;
    // Only Ready nodes run kubelets; pods bound to a missing node are garbage (pod GC).
    let nodes: HashMap<String, bool> = st
        .list("nodes", None)
        .iter()
        .map(|n| (str_at(n, "/metadata/name").to_string(), node_ready(n)))
        .collect();
    for pod in st.list("pods", None) {
        let node = str_at(&pod, "/spec/nodeName");
        if node.is_empty() {
            continue;
        }
        let Some(&ready_node) = nodes.get(node) else {
            let (ns, name) = (
                str_at(&pod, "/metadata/namespace"),
                str_at(&pod, "/metadata/name"),
            );
            st.remove(pods_def, ns, name);
            continue;
        };
        if !ready_node {
            continue;
        }
        let terminating = is_terminating(&pod);
        let started_already = at(&pod, "/status/startTime").is_some();
        if started_already && !terminating && ephemeral(st, &pod) {
            continue;
        }
        let uid_ref = str_at(&pod, "/metadata/uid");
        // Fast path: a running pod with nothing scheduled for it costs one lookup.
        if !terminating
            && started_already
            && str_at(&pod, "/spec/restartPolicy") == "Always"
            && !st.rt.next_restart.contains_key(uid_ref)
        {
            continue;
        }
        let uid = uid_ref.to_string();
        let ns = str_at(&pod, "/metadata/namespace").to_string();
        let name = str_at(&pod, "/metadata/name").to_string();
        if terminating {
            let started = match st.rt.pod_term.get(&uid) {
                Some(t) => *t,
                None => {
                    st.rt.pod_term.insert(uid.clone(), now);
                    for c in containers(&pod) {
                        let msg = format!("Stopping container {}", str_at(&c, "/name"));
                        emit_event(st, &pod, "Normal", "Killing", &msg, COMPONENT);
                    }
                    now
                }
            };
            let grace = int_at(&pod, "/metadata/deletionGracePeriodSeconds", 30) as f64;
            // Simulated containers stop promptly: they exit well before the grace period.
            if sim_elapsed(started, speed) >= grace.min(START_DELAY_SECS) {
                st.remove(pods_def, &ns, &name);
                st.rt.pod_term.remove(&uid);
                st.rt.pod_seen.remove(&uid);
                st.rt.next_restart.remove(&uid);
            }
            continue;
        }
        let phase = str_at(&pod, "/status/phase");
        if phase == "Succeeded" || phase == "Failed" {
            continue;
        }
        let seen = *st.rt.pod_seen.entry(uid.clone()).or_insert(now);
        let elapsed = sim_elapsed(seen, speed);
        if at(&pod, "/status/startTime").is_none() {
            // Volumes from ConfigMaps that do not exist (yet) keep the pod ContainerCreating,
            // as the kubelet's MountVolume retries do.
            if elapsed >= START_DELAY_SECS && missing_config_map(st, &pod).is_none() {
                let crashes = start(st, &pod, node);
                if crashes {
                    st.rt
                        .next_restart
                        .insert(uid, now + Duration::from_secs_f64(backoff(0) / speed));
                }
            }
            continue;
        }
        let policy = str_at(&pod, "/spec/restartPolicy");
        if policy != "Always" && elapsed >= START_DELAY_SECS + RUN_TO_COMPLETION_SECS {
            complete(st, &pod);
            continue;
        }
        if let Some(at) = st.rt.next_restart.get(&uid).copied() {
            if now >= at && crash_restart(st, &pod) {
                let restarts = pod
                    .pointer("/status/containerStatuses")
                    .and_then(Value::as_array)
                    .map_or(0, |cs| {
                        cs.iter()
                            .map(|c| int_at(c, "/restartCount", 0))
                            .max()
                            .unwrap_or(0)
                    });
                st.rt.next_restart.insert(
                    uid,
                    now + Duration::from_secs_f64(backoff(restarts + 1) / speed),
                );
            }
        }
    }
}

/// Starts the pod's containers; returns whether any crash-loops.
fn start(st: &mut State, pod: &Value, node: &str) -> bool {
    let Some(pods_def) = by_plural("pods") else {
        return false;
    };
    let mut crashes = false;
    let now = now_str();
    let mut new = pod.clone();
    let mut statuses = Vec::new();
    let mut all_ready = true;
    let mut pull_failed = false;
    let name = str_at(pod, "/metadata/name").to_string();
    let mut events: Vec<(&str, &str, String)> = Vec::new();
    for c in containers(pod) {
        let cname = str_at(&c, "/name").to_string();
        let image = str_at(&c, "/image").to_string();
        let cid = format!(
            "containerd://{}",
            &hex_id(&format!("{}{}", str_at(pod, "/metadata/uid"), cname))[..64]
        );
        let image_id = format!("docker.io/library/{image}@sha256:{}", &hex_id(&image)[..64]);
        let missing = missing_file(st, pod, &c);
        // A program crashes when the image asks for it, or when the command names a file the
        // mounted ConfigMap does not hold (with the runtime's own error and exit code).
        let runs_as = match behaviour(&image) {
            Behaviour::Run if missing.is_some() => Behaviour::Crash,
            other => other,
        };
        let status = match runs_as {
            Behaviour::Crash => {
                let (code, message) = missing.clone().unwrap_or((1, String::new()));
                all_ready = false;
                crashes = true;
                events.push((
                    "Normal",
                    "Pulled",
                    format!("Container image \"{image}\" already present on machine"),
                ));
                events.push(("Normal", "Created", format!("Created container: {cname}")));
                events.push(("Normal", "Started", format!("Started container {cname}")));
                events.push((
                    "Warning",
                    "BackOff",
                    format!(
                        "Back-off restarting failed container {cname} in pod {name}_{}({})",
                        str_at(pod, "/metadata/namespace"),
                        str_at(pod, "/metadata/uid")
                    ),
                ));
                let mut terminated = json!({"exitCode": code, "reason": "Error", "startedAt": now, "finishedAt": now, "containerID": cid});
                if !message.is_empty() {
                    terminated["message"] = json!(message);
                }
                json!({"name": cname, "image": image, "imageID": image_id, "containerID": cid,
                       "ready": false, "started": false, "restartCount": 0,
                       "state": {"waiting": {"reason": "CrashLoopBackOff",
                           "message": format!("back-off 10s restarting failed container={cname} pod={name}_{}({})", str_at(pod, "/metadata/namespace"), str_at(pod, "/metadata/uid"))}},
                       "lastState": {"terminated": terminated}})
            }
            Behaviour::Run => {
                events.push((
                    "Normal",
                    "Pulled",
                    format!("Container image \"{image}\" already present on machine"),
                ));
                events.push(("Normal", "Created", format!("Created container: {cname}")));
                events.push(("Normal", "Started", format!("Started container {cname}")));
                json!({"name": cname, "image": image, "imageID": image_id, "containerID": cid,
                       "ready": true, "started": true, "restartCount": 0,
                       "state": {"running": {"startedAt": now}}})
            }
            Behaviour::BadImage => {
                all_ready = false;
                pull_failed = true;
                events.push(("Normal", "Pulling", format!("Pulling image \"{image}\"")));
                events.push(("Warning", "Failed", format!("Failed to pull image \"{image}\": rpc error: code = NotFound desc = failed to pull and unpack image \"docker.io/library/{image}\": not found")));
                events.push(("Warning", "Failed", "Error: ErrImagePull".to_string()));
                events.push((
                    "Normal",
                    "BackOff",
                    format!("Back-off pulling image \"{image}\""),
                ));
                json!({"name": cname, "image": image, "imageID": "", "ready": false, "started": false, "restartCount": 0,
                       "state": {"waiting": {"reason": "ImagePullBackOff", "message": format!("Back-off pulling image \"{image}\"")}}})
            }
        };
        statuses.push(status);
    }
    let octet =
        |s: &str| (hex_id(s).as_bytes()[0] as u32 * 7 + hex_id(s).as_bytes()[1] as u32) % 250 + 2;
    let node_num: u32 = node
        .trim_start_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .unwrap_or(0);
    set_at(
        &mut new,
        "/status/phase",
        json!(if pull_failed { "Pending" } else { "Running" }),
    );
    set_at(&mut new, "/status/startTime", json!(now));
    set_at(
        &mut new,
        "/status/hostIP",
        json!(format!("192.168.49.{}", node_num + 1)),
    );
    set_at(
        &mut new,
        "/status/hostIPs",
        json!([{"ip": format!("192.168.49.{}", node_num + 1)}]),
    );
    let ip = format!("10.244.{}.{}", node_num, octet(&name));
    set_at(&mut new, "/status/podIP", json!(ip));
    set_at(&mut new, "/status/podIPs", json!([{"ip": ip}]));
    set_at(&mut new, "/status/containerStatuses", json!(statuses));
    let ready = if all_ready { "True" } else { "False" };
    let (reason, msg) = if all_ready {
        ("", String::new())
    } else {
        (
            "ContainersNotReady",
            "containers with unready status: [...]".to_string(),
        )
    };
    set_condition(&mut new, "PodReadyToStartContainers", "True", "", "", false);
    set_condition(&mut new, "Initialized", "True", "", "", false);
    set_condition(&mut new, "Ready", ready, reason, &msg, false);
    set_condition(&mut new, "ContainersReady", ready, reason, &msg, false);
    set_condition(&mut new, "PodScheduled", "True", "", "", false);
    strip_empty_condition_fields(&mut new);
    let out = st.replace(pods_def, new);
    for (t, r, m) in events {
        emit_event(st, &out, t, r, &m, COMPONENT);
    }
    crashes
}

/// A ConfigMap a volume of the pod needs that does not exist (optional ones aside).
fn missing_config_map(st: &State, pod: &Value) -> Option<String> {
    let ns = str_at(pod, "/metadata/namespace");
    at(pod, "/spec/volumes")
        .and_then(Value::as_array)?
        .iter()
        .filter_map(|v| v.get("configMap"))
        .filter(|cm| cm.get("optional") != Some(&Value::Bool(true)))
        .map(|cm| str_at(cm, "/name").to_string())
        .find(|name| st.get("configmaps", ns, name).is_none())
}

/// The files a container sees under each ConfigMap mount: `(mountPath, paths)`.
fn config_map_files(st: &State, pod: &Value, c: &Value) -> Vec<(String, Vec<String>)> {
    let ns = str_at(pod, "/metadata/namespace");
    let volumes = at(pod, "/spec/volumes")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mounts = at(c, "/volumeMounts")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut out = Vec::new();
    for m in mounts {
        let Some(cm) = volumes
            .iter()
            .find(|v| str_at(v, "/name") == str_at(&m, "/name"))
            .and_then(|v| v.get("configMap"))
        else {
            continue;
        };
        let paths: Vec<String> = match cm.get("items").and_then(Value::as_array) {
            Some(items) => items
                .iter()
                .map(|i| str_at(i, "/path").to_string())
                .collect(),
            None => st
                .get("configmaps", ns, str_at(cm, "/name"))
                .and_then(|o| o.get("data").and_then(Value::as_object).cloned())
                .map(|d| d.keys().cloned().collect())
                .unwrap_or_default(),
        };
        out.push((
            str_at(&m, "/mountPath").trim_end_matches('/').to_string(),
            paths,
        ));
    }
    out
}

/// When the container's command names a file under a ConfigMap mount that the ConfigMap does
/// not hold: the exit code and the message its runtime would print.
fn missing_file(st: &State, pod: &Value, c: &Value) -> Option<(i64, String)> {
    let words: Vec<String> = ["/command", "/args"]
        .iter()
        .filter_map(|p| at(c, p).and_then(Value::as_array))
        .flatten()
        .filter_map(|w| w.as_str().map(str::to_string))
        .collect();
    let mounts = config_map_files(st, pod, c);
    let program = words
        .first()
        .map(|w| w.rsplit('/').next().unwrap_or(w).to_string())
        .unwrap_or_default();
    for word in &words {
        for (mount, paths) in &mounts {
            let Some(relative) = word.strip_prefix(&format!("{mount}/")) else {
                continue;
            };
            if relative.is_empty() || paths.iter().any(|p| p == relative) {
                continue;
            }
            let message = match program.as_str() {
                p if p.starts_with("python") => (
                    2,
                    format!("{p}: can't open file '{word}': [Errno 2] No such file or directory"),
                ),
                "node" => (1, format!("Error: Cannot find module '{word}'")),
                "go" => (1, format!("stat {word}: no such file or directory")),
                p => (127, format!("{p}: {word}: No such file or directory")),
            };
            return Some(message);
        }
    }
    None
}

fn strip_empty_condition_fields(p: &mut Value) {
    if let Some(cs) = p
        .pointer_mut("/status/conditions")
        .and_then(Value::as_array_mut)
    {
        for c in cs {
            if let Some(m) = c.as_object_mut() {
                m.retain(|_, v| v.as_str() != Some(""));
            }
        }
    }
}

/// One more crash of every crash-looping container; returns whether any crashed.
fn crash_restart(st: &mut State, pod: &Value) -> bool {
    let Some(pods_def) = by_plural("pods") else {
        return false;
    };
    let mut new = pod.clone();
    let now = now_str();
    let mut crashed = Vec::new();
    if let Some(cs) = new
        .pointer_mut("/status/containerStatuses")
        .and_then(Value::as_array_mut)
    {
        for c in cs.iter_mut() {
            let looping = str_at(c, "/state/waiting/reason") == "CrashLoopBackOff";
            if behaviour(str_at(c, "/image")) != Behaviour::Crash && !looping {
                continue;
            }
            let n = int_at(c, "/restartCount", 0) + 1;
            c["restartCount"] = json!(n);
            let mut terminated = json!({"exitCode": 1, "reason": "Error", "startedAt": now, "finishedAt": now,
                "containerID": str_at(c, "/containerID")});
            // The same program fails the same way each time.
            for key in ["exitCode", "message"] {
                if let Some(v) = c.pointer(&format!("/lastState/terminated/{key}")) {
                    terminated[key] = v.clone();
                }
            }
            c["lastState"] = json!({ "terminated": terminated });
            let secs = backoff(n) as i64;
            let back = if secs >= 60 {
                format!("{}m{}s", secs / 60, secs % 60)
            } else {
                format!("{secs}s")
            };
            c["state"] = json!({"waiting": {"reason": "CrashLoopBackOff",
                "message": format!("back-off {back} restarting failed container={} pod={}_{}({})", str_at(c, "/name"),
                    str_at(pod, "/metadata/name"), str_at(pod, "/metadata/namespace"), str_at(pod, "/metadata/uid"))}});
            crashed.push(str_at(c, "/name").to_string());
        }
    }
    if crashed.is_empty() {
        return false;
    }
    let out = st.replace(pods_def, new);
    for c in crashed {
        let msg = format!(
            "Back-off restarting failed container {c} in pod {}_{}({})",
            str_at(&out, "/metadata/name"),
            str_at(&out, "/metadata/namespace"),
            str_at(&out, "/metadata/uid")
        );
        emit_event(st, &out, "Warning", "BackOff", &msg, COMPONENT);
    }
    true
}

fn complete(st: &mut State, pod: &Value) {
    let Some(pods_def) = by_plural("pods") else {
        return;
    };
    let now = now_str();
    let mut new = pod.clone();
    let failed = containers(pod)
        .iter()
        .any(|c| behaviour(str_at(c, "/image")) != Behaviour::Run)
        || pod
            .pointer("/status/containerStatuses")
            .and_then(Value::as_array)
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| str_at(c, "/state/waiting/reason") == "CrashLoopBackOff")
            });
    let (phase, code, reason) = if failed {
        ("Failed", 1, "Error")
    } else {
        ("Succeeded", 0, "Completed")
    };
    set_at(&mut new, "/status/phase", json!(phase));
    if let Some(cs) = new
        .pointer_mut("/status/containerStatuses")
        .and_then(Value::as_array_mut)
    {
        for c in cs.iter_mut() {
            c["ready"] = json!(false);
            c["started"] = json!(false);
            c["state"] = json!({"terminated": {"exitCode": code, "reason": reason, "startedAt": str_at(pod, "/status/startTime"), "finishedAt": now}});
        }
    }
    set_condition(&mut new, "Ready", "False", "PodCompleted", "", false);
    set_condition(
        &mut new,
        "ContainersReady",
        "False",
        "PodCompleted",
        "",
        false,
    );
    strip_empty_condition_fields(&mut new);
    st.replace(pods_def, new);
}

/// Runs the ephemeral containers (`kubectl debug`) of a running pod: each starts, runs for
/// [`RUN_TO_COMPLETION_SECS`] and exits 0 (an image that cannot be pulled waits with
/// `ImagePullBackOff`). Returns whether the pod changed.
fn ephemeral(st: &mut State, pod: &Value) -> bool {
    let Some(specs) = at(pod, "/spec/ephemeralContainers").and_then(Value::as_array) else {
        return false;
    };
    let Some(pods_def) = by_plural("pods") else {
        return false;
    };
    let statuses: Vec<Value> = at(pod, "/status/ephemeralContainerStatuses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let now = chrono::Utc::now();
    let mut changed = false;
    let mut out = Vec::new();
    let mut events = Vec::new();
    for spec in specs {
        let name = str_at(spec, "/name").to_string();
        let image = str_at(spec, "/image").to_string();
        let status = statuses
            .iter()
            .find(|s| str_at(s, "/name") == name)
            .cloned();
        let next = match status {
            None => {
                changed = true;
                if behaviour(&image) == Behaviour::BadImage {
                    events.push((
                        "Warning",
                        "Failed",
                        format!("Failed to pull image \"{image}\": not found"),
                    ));
                    json!({"name": name, "image": image, "ready": false, "restartCount": 0,
                           "state": {"waiting": {"reason": "ImagePullBackOff", "message": format!("Back-off pulling image \"{image}\"")}}})
                } else {
                    events.push(("Normal", "Started", format!("Started container {name}")));
                    json!({"name": name, "image": image, "ready": false, "restartCount": 0,
                           "imageID": format!("docker.io/library/{image}@sha256:{}", &hex_id(&image)[..64]),
                           "containerID": format!("containerd://{}", &hex_id(&format!("{}{name}", str_at(pod, "/metadata/uid")))[..64]),
                           "state": {"running": {"startedAt": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)}}})
                }
            }
            Some(mut s) => {
                let started =
                    chrono::DateTime::parse_from_rfc3339(str_at(&s, "/state/running/startedAt"));
                if let Ok(started) = started {
                    let ran = (now - started.with_timezone(&chrono::Utc)).num_milliseconds() as f64
                        / 1000.0
                        * st.speed;
                    if ran >= RUN_TO_COMPLETION_SECS {
                        changed = true;
                        let started_at = str_at(&s, "/state/running/startedAt").to_string();
                        s["state"] = json!({"terminated": {"exitCode": 0, "reason": "Completed",
                            "startedAt": started_at, "finishedAt": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                            "containerID": str_at(&s, "/containerID")}});
                    }
                }
                s
            }
        };
        out.push(next);
    }
    if !changed {
        return false;
    }
    let mut new = pod.clone();
    set_at(&mut new, "/status/ephemeralContainerStatuses", json!(out));
    let stored = st.replace(pods_def, new);
    for (t, r, m) in events {
        emit_event(st, &stored, t, r, &m, COMPONENT);
    }
    true
}

/// The log of an ephemeral container: what it ran, and that it finished.
///
/// # Errors
/// While it has not started.
pub fn ephemeral_log(pod: &Value, container: &str) -> Result<String, String> {
    let spec = at(pod, "/spec/ephemeralContainers")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| str_at(c, "/name") == container))
        .cloned()
        .unwrap_or(Value::Null);
    let status = at(pod, "/status/ephemeralContainerStatuses")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| str_at(c, "/name") == container))
        .cloned()
        .unwrap_or(Value::Null);
    let started = str_at(&status, "/state/running/startedAt");
    let started = if started.is_empty() {
        str_at(&status, "/state/terminated/startedAt")
    } else {
        started
    };
    if started.is_empty() {
        return Err(format!(
            "container \"{container}\" in pod \"{}\" is waiting to start: {}",
            str_at(pod, "/metadata/name"),
            str_at(&status, "/state/waiting/reason")
        ));
    }
    let command: Vec<&str> = ["/command", "/args"]
        .iter()
        .filter_map(|p| at(&spec, p).and_then(Value::as_array))
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let mut log = format!(
        "{started} INFO  [{container}] debugging container {} of pod {} with {}\n{started} INFO  [{container}] ran: {}\n",
        str_at(&spec, "/targetContainerName"),
        str_at(pod, "/metadata/name"),
        str_at(&spec, "/image"),
        command.join(" ")
    );
    let finished = str_at(&status, "/state/terminated/finishedAt");
    if !finished.is_empty() {
        log.push_str(&format!(
            "{finished} INFO  [{container}] exited with code 0\n"
        ));
    }
    Ok(log)
}

/// The log of one container: a few deterministic start-up lines, then one line per few
/// simulated seconds of uptime. Crash-looping containers log their fatal error.
///
/// # Errors
/// A message when `previous` is asked for a container that never terminated.
pub fn log_lines(
    pod: &Value,
    container: &str,
    previous: bool,
    speed: f64,
) -> Result<Vec<String>, String> {
    let image = containers(pod)
        .iter()
        .find(|c| str_at(c, "/name") == container)
        .map(|c| str_at(c, "/image").to_string())
        .unwrap_or_default();
    let failed_with = pod
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| str_at(c, "/name") == container))
        .map(|c| str_at(c, "/lastState/terminated/message").to_string())
        .filter(|m| !m.is_empty());
    if let Some(message) = failed_with {
        // What the program printed before it exited, each time it ran.
        return Ok(message.lines().map(str::to_string).collect());
    }
    let start = chrono::DateTime::parse_from_rfc3339(str_at(pod, "/status/startTime"))
        .map(|t| t.with_timezone(&chrono::Utc))
        .unwrap_or_else(|_| chrono::Utc::now());
    let pod_name = str_at(pod, "/metadata/name");
    let ts = |secs: i64| {
        (start + chrono::Duration::seconds(secs)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let mut lines = vec![
        format!(
            "{} INFO  [{container}] starting {image} in pod {pod_name}",
            ts(0)
        ),
        format!(
            "{} INFO  [{container}] loaded configuration from /etc/{container}/config.yaml",
            ts(0)
        ),
    ];
    match behaviour(&image) {
        Behaviour::Crash => {
            let restarted = pod
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array)
                .and_then(|cs| cs.iter().find(|c| str_at(c, "/name") == container))
                .is_some_and(|c| {
                    int_at(c, "/restartCount", 0) > 0 || at(c, "/lastState/terminated").is_some()
                });
            if previous && !restarted {
                return Err(format!(
                    "previous terminated container \"{container}\" in pod \"{pod_name}\" not found"
                ));
            }
            lines.push(format!(
                "{} INFO  [{container}] connecting to dependencies",
                ts(1)
            ));
            lines.push(format!("{} ERROR [{container}] panic: failed to initialise: configuration invalid (simulated crash)", ts(1)));
            lines.push(format!("{} FATAL [{container}] exiting with code 1", ts(1)));
        }
        _ => {
            if previous {
                return Err(format!(
                    "previous terminated container \"{container}\" in pod \"{pod_name}\" not found"
                ));
            }
            lines.push(format!("{} INFO  [{container}] listening on :8080", ts(1)));
            lines.push(format!("{} INFO  [{container}] ready", ts(2)));
            let uptime = (chrono::Utc::now() - start).num_milliseconds() as f64 / 1000.0 * speed;
            let extra = ((uptime / 60.0) * LOG_LINES_PER_MINUTE) as usize;
            let step = 60.0 / LOG_LINES_PER_MINUTE;
            for i in 0..extra.min(MAX_LOG_LINES) {
                let at = 2 + ((i + 1) as f64 * step / speed.max(1.0)) as i64;
                lines.push(format!(
                    "{} INFO  [{container}] GET /healthz 200 ({} ms) request_id={}",
                    ts(at),
                    1 + (i * 7) % 13,
                    &hex_id(&format!("{pod_name}{container}{i}"))[..12]
                ));
            }
        }
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_image_tag_picks_the_behaviour() {
        assert!(behaviour("nginx:1.25") == Behaviour::Run);
        assert!(behaviour("registry:5000/app:crashloop") == Behaviour::Crash);
        assert!(behaviour("app:badimage") == Behaviour::BadImage);
        assert!(behaviour("nginx") == Behaviour::Run);
    }

    #[test]
    fn back_off_doubles_to_five_minutes() {
        assert_eq!(backoff(0), 10.0);
        assert_eq!(backoff(1), 20.0);
        assert_eq!(backoff(9), 300.0);
    }

    #[test]
    fn logs_are_deterministic_and_previous_needs_a_crash() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i:1"}]},
            "status": {"startTime": "2026-01-01T00:00:00Z"}});
        let a = log_lines(&pod, "c", false, 1.0).unwrap();
        assert!(a.len() > 4);
        assert_eq!(a[0], log_lines(&pod, "c", false, 1.0).unwrap()[0]);
        assert!(log_lines(&pod, "c", true, 1.0).is_err());
    }
}
