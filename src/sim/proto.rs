//! Just enough of the Kubernetes protobuf encoding to read the request bodies kubectl's typed
//! clients send as `application/vnd.kubernetes.protobuf` for the create-only requests the
//! simulator must understand: `TokenRequest` (`kubectl create token`),
//! `SelfSubjectAccessReview` (`kubectl auth can-i`), `SelfSubjectReview` (`kubectl auth
//! whoami`) and `SubjectAccessReview`. Answers stay JSON (clients decode by the answer's
//! content type). Every other protobuf body is still refused with 415.

use serde_json::{json, Map, Value};

/// The envelope's magic prefix.
const MAGIC: &[u8] = b"k8s\x00";

enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

fn varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut out = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        out |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(out);
        }
    }
    None
}

/// The fields of one message, in order; `None` when it does not parse.
fn fields(buf: &[u8]) -> Option<Vec<(u64, Field<'_>)>> {
    let mut pos = 0;
    let mut out = Vec::new();
    while pos < buf.len() {
        let key = varint(buf, &mut pos)?;
        let (no, wire) = (key >> 3, key & 7);
        match wire {
            0 => out.push((no, Field::Varint(varint(buf, &mut pos)?))),
            1 => pos = pos.checked_add(8)?,
            2 => {
                let len = usize::try_from(varint(buf, &mut pos)?).ok()?;
                let end = pos.checked_add(len).filter(|e| *e <= buf.len())?;
                out.push((no, Field::Bytes(&buf[pos..end])));
                pos = end;
            }
            5 => pos = pos.checked_add(4)?,
            _ => return None,
        }
    }
    (pos == buf.len()).then_some(out)
}

fn string(f: &Field) -> Option<String> {
    match f {
        Field::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Field::Varint(_) => None,
    }
}

fn message<'a>(f: &Field<'a>) -> &'a [u8] {
    match f {
        Field::Bytes(b) => b,
        Field::Varint(_) => &[],
    }
}

/// A message whose fields are strings (repeated ones as arrays), by field number.
fn strings(buf: &[u8], names: &[(u64, &str)], repeated: &[u64]) -> Option<Value> {
    let mut m = Map::new();
    for (no, f) in fields(buf)? {
        let Some((_, name)) = names.iter().find(|(n, _)| *n == no) else {
            continue;
        };
        let s = string(&f)?;
        if repeated.contains(&no) {
            m.entry(name.to_string())
                .or_insert_with(|| json!([]))
                .as_array_mut()?
                .push(json!(s));
        } else {
            m.insert(name.to_string(), json!(s));
        }
    }
    Some(Value::Object(m))
}

fn object_meta(buf: &[u8]) -> Option<Value> {
    strings(
        buf,
        &[(1, "name"), (2, "generateName"), (3, "namespace")],
        &[],
    )
}

fn resource_attributes(buf: &[u8]) -> Option<Value> {
    strings(
        buf,
        &[
            (1, "namespace"),
            (2, "verb"),
            (3, "group"),
            (4, "version"),
            (5, "resource"),
            (6, "subresource"),
            (7, "name"),
        ],
        &[],
    )
}

fn non_resource_attributes(buf: &[u8]) -> Option<Value> {
    strings(buf, &[(1, "path"), (2, "verb")], &[])
}

fn access_review_spec(buf: &[u8]) -> Option<Value> {
    let mut spec = Map::new();
    for (no, f) in fields(buf)? {
        match no {
            1 => {
                spec.insert(
                    "resourceAttributes".into(),
                    resource_attributes(message(&f))?,
                );
            }
            2 => {
                spec.insert(
                    "nonResourceAttributes".into(),
                    non_resource_attributes(message(&f))?,
                );
            }
            3 => {
                spec.insert("user".into(), json!(string(&f)?));
            }
            4 => {
                spec.entry("groups")
                    .or_insert_with(|| json!([]))
                    .as_array_mut()?
                    .push(json!(string(&f)?));
            }
            6 => {
                spec.insert("uid".into(), json!(string(&f)?));
            }
            _ => {}
        }
    }
    Some(Value::Object(spec))
}

fn token_request_spec(buf: &[u8]) -> Option<Value> {
    let mut spec = Map::new();
    for (no, f) in fields(buf)? {
        match (no, &f) {
            (1, _) => {
                spec.entry("audiences")
                    .or_insert_with(|| json!([]))
                    .as_array_mut()?
                    .push(json!(string(&f)?));
            }
            (4, Field::Varint(n)) => {
                spec.insert("expirationSeconds".into(), json!(*n as i64));
            }
            _ => {}
        }
    }
    Some(Value::Object(spec))
}

/// The JSON form of a protobuf-encoded `kind` body, for the kinds this module knows.
pub fn decode(body: &[u8]) -> Option<Value> {
    let inner = body.strip_prefix(MAGIC)?;
    let mut api_version = String::new();
    let mut kind = String::new();
    let mut raw: &[u8] = &[];
    for (no, f) in fields(inner)? {
        match no {
            1 => {
                for (tno, tf) in fields(message(&f))? {
                    match tno {
                        1 => api_version = string(&tf)?,
                        2 => kind = string(&tf)?,
                        _ => {}
                    }
                }
            }
            2 => raw = message(&f),
            _ => {}
        }
    }
    let mut obj = json!({"apiVersion": api_version, "kind": kind, "metadata": {}});
    for (no, f) in fields(raw)? {
        match (no, kind.as_str()) {
            (1, _) => obj["metadata"] = object_meta(message(&f))?,
            (2, "TokenRequest") => obj["spec"] = token_request_spec(message(&f))?,
            (2, "SelfSubjectAccessReview" | "SubjectAccessReview" | "LocalSubjectAccessReview") => {
                obj["spec"] = access_review_spec(message(&f))?
            }
            _ => {}
        }
    }
    matches!(
        kind.as_str(),
        "TokenRequest"
            | "SelfSubjectAccessReview"
            | "SubjectAccessReview"
            | "LocalSubjectAccessReview"
            | "SelfSubjectReview"
    )
    .then_some(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(no: u64, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![(no << 3 | 2) as u8, bytes.len() as u8];
        out.extend_from_slice(bytes);
        out
    }

    #[test]
    fn a_self_subject_access_review_decodes() {
        let attrs = [
            field(1, b"default"),
            field(2, b"patch"),
            field(3, b"apps"),
            field(5, b"deployments"),
        ]
        .concat();
        let spec = field(1, &attrs);
        let raw = [field(1, &[]), field(2, &spec)].concat();
        let tm = [
            field(1, b"authorization.k8s.io/v1"),
            field(2, b"SelfSubjectAccessReview"),
        ]
        .concat();
        let body = [MAGIC.to_vec(), field(1, &tm), field(2, &raw)].concat();
        let v = decode(&body).unwrap();
        assert_eq!(v["kind"], "SelfSubjectAccessReview");
        assert_eq!(
            v["spec"]["resourceAttributes"],
            json!({"namespace": "default", "verb": "patch", "group": "apps", "resource": "deployments"})
        );
    }
}
