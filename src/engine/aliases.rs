//! Other platforms' spellings of what a request names, accepted by every door: action names
//! with hyphens (`scale-deployment`) and parameter names in camelCase (`gracePeriodSeconds`).

use crate::domain::ExecutionRequest;

/// Other platforms' spellings, accepted as aliases by every door: action names with hyphens
/// (`scale-deployment`) and parameter names in camelCase (`gracePeriodSeconds`).
pub(super) fn normalize(request: &ExecutionRequest) -> ExecutionRequest {
    let mut request = request.clone();
    request.action = request.action.replace('-', "_");
    let camel: Vec<String> = request
        .parameters
        .keys()
        .filter(|k| k.chars().any(|c| c.is_ascii_uppercase()))
        .cloned()
        .collect();
    for key in camel {
        let mut snake = String::with_capacity(key.len() + 4);
        for c in key.chars() {
            if c.is_ascii_uppercase() {
                snake.push('_');
                snake.push(c.to_ascii_lowercase());
            } else {
                snake.push(c);
            }
        }
        if !request.parameters.contains_key(&snake) {
            if let Some(value) = request.parameters.remove(&key) {
                request.parameters.insert(snake, value);
            }
        }
    }
    request
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hyphens_and_camel_case_become_the_catalog_names_and_snake_case_wins_a_tie() {
        let mut request = ExecutionRequest {
            action: "restart-pod".into(),
            ..Default::default()
        };
        for (key, value) in [
            ("gracePeriodSeconds", json!(5)),
            ("toRevision", json!(2)),
            ("waitReady", json!(true)),
            ("wait_ready", json!(false)),
        ] {
            request.parameters.insert(key.into(), value);
        }
        let normalized = normalize(&request);
        assert_eq!(normalized.action, "restart_pod");
        assert_eq!(normalized.parameters["grace_period_seconds"], 5);
        assert_eq!(normalized.parameters["to_revision"], 2);
        // Given both ways, the catalog's own spelling is taken (and the alias stays, to be
        // refused as unknown).
        assert_eq!(normalized.parameters["wait_ready"], false);
        assert!(normalized.parameters.contains_key("waitReady"));
    }
}
