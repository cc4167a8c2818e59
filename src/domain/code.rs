//! The API platform's deployed code: how an API id names the objects that run it. Shared by
//! the code actions and the platform's HTTP door, which must agree on it.

/// Objects of API `ID` are named `api-ID` (the platform's container name).
pub const CODE_NAME_PREFIX: &str = "api-";

/// The namespace the platform's door deploys into unless `--code-namespace` says otherwise.
pub const DEFAULT_CODE_NAMESPACE: &str = "apis";

/// Whether `text` is a UUID in its canonical text form (8-4-4-4-12 hexadecimal digits).
pub fn is_uuid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The name of API `api_id`'s objects: `api-` and the id in lower case (Kubernetes names are).
pub fn code_object_name(api_id: &str) -> String {
    format!("{CODE_NAME_PREFIX}{}", api_id.to_ascii_lowercase())
}

/// The API id of objects named `name`, if it is `api-<uuid>`.
pub fn api_id_of(name: &str) -> Option<&str> {
    name.strip_prefix(CODE_NAME_PREFIX).filter(|id| is_uuid(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_api_id_is_a_uuid_and_names_its_objects() {
        let id = "3F2504E0-4F89-11D3-9A0C-0305E82C3301";
        assert!(is_uuid(id));
        let name = code_object_name(id);
        assert_eq!(name, "api-3f2504e0-4f89-11d3-9a0c-0305e82c3301");
        assert_eq!(
            api_id_of(&name),
            Some("3f2504e0-4f89-11d3-9a0c-0305e82c3301")
        );
        for bad in [
            "",
            "x",
            "3f2504e0-4f89-11d3-9a0c",
            "3f2504e0-4f89-11d3-9a0c-0305e82c330g",
        ] {
            assert!(!is_uuid(bad), "{bad}");
        }
        assert_eq!(api_id_of("web"), None);
    }
}
