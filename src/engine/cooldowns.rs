//! Cooldowns per object, checked and claimed atomically for every object an execution will
//! change: of two concurrent requests touching one object, one claims it and the other is
//! refused with the time the cooldown ends. All of an execution's objects are claimed at once
//! or none is.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use chrono::{DateTime, Utc};

/// Who holds an object, and until when.
#[derive(Debug, Clone)]
struct Claim {
    execution_id: String,
    /// `None` while the execution has not ended.
    until: Option<DateTime<Utc>>,
}

/// Why a request was refused by the cooldown.
#[derive(Debug, Clone)]
pub struct InCooldown {
    /// The key of the object that is held.
    pub key: String,
    pub execution_id: String,
    pub until: Option<DateTime<Utc>>,
}

#[derive(Default)]
pub struct Cooldowns {
    claims: Mutex<HashMap<String, Claim>>,
}

impl Cooldowns {
    /// Claims every key in `keys` for `execution_id` unless another execution holds one of
    /// them (running, or ended less than its cooldown ago); then nothing is claimed.
    pub fn claim(&self, keys: &[String], execution_id: &str) -> Result<(), InCooldown> {
        let mut claims = self.claims.lock().unwrap_or_else(|e| e.into_inner());
        let now = Utc::now();
        for key in keys {
            if let Some(claim) = claims.get(key) {
                if claim.execution_id != execution_id && claim.until.is_none_or(|until| until > now)
                {
                    return Err(InCooldown {
                        key: key.clone(),
                        execution_id: claim.execution_id.clone(),
                        until: claim.until,
                    });
                }
            }
        }
        for key in keys {
            claims.insert(
                key.clone(),
                Claim {
                    execution_id: execution_id.to_string(),
                    until: None,
                },
            );
        }
        Ok(())
    }

    /// The execution ended: the cooldown of each of its objects runs from now.
    pub fn finish(&self, keys: &[String], execution_id: &str, cooldown: Duration) {
        let mut claims = self.claims.lock().unwrap_or_else(|e| e.into_inner());
        let until = Utc::now() + chrono::Duration::from_std(cooldown).unwrap_or_default();
        for key in keys {
            if let Some(claim) = claims
                .get_mut(key)
                .filter(|c| c.execution_id == execution_id)
            {
                claim.until = Some(until);
            }
        }
        // Expired claims go, so the map stays as small as the recent work.
        let now = Utc::now();
        claims.retain(|_, c| c.until.is_none_or(|u| u > now));
    }

    /// The execution never changed anything (refused, cancelled while queued): no cooldown.
    pub fn release(&self, keys: &[String], execution_id: &str) {
        let mut claims = self.claims.lock().unwrap_or_else(|e| e.into_inner());
        for key in keys {
            if claims
                .get(key)
                .is_some_and(|c| c.execution_id == execution_id)
            {
                claims.remove(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn a_target_in_cooldown_is_refused_with_its_end() {
        let c = Cooldowns::default();
        c.claim(&keys(&["t"]), "a").unwrap();
        let busy = c.claim(&keys(&["t"]), "b").unwrap_err();
        assert_eq!((busy.execution_id.as_str(), busy.until), ("a", None));
        c.finish(&keys(&["t"]), "a", Duration::from_secs(300));
        let cooling = c.claim(&keys(&["t"]), "b").unwrap_err();
        assert!(cooling.until.unwrap() > Utc::now() + chrono::Duration::seconds(290));
    }

    #[test]
    fn a_zero_cooldown_frees_the_target_at_once_and_release_forgets_the_claim() {
        let c = Cooldowns::default();
        c.claim(&keys(&["t"]), "a").unwrap();
        c.finish(&keys(&["t"]), "a", Duration::ZERO);
        c.claim(&keys(&["t"]), "b").unwrap();
        c.release(&keys(&["t"]), "b");
        c.claim(&keys(&["t"]), "c").unwrap();
    }

    #[test]
    fn one_held_object_refuses_the_whole_set_and_claims_none_of_it() {
        let c = Cooldowns::default();
        c.claim(&keys(&["pod"]), "a").unwrap();
        let busy = c.claim(&keys(&["deployment", "pod"]), "b").unwrap_err();
        assert_eq!(
            (busy.key.as_str(), busy.execution_id.as_str()),
            ("pod", "a")
        );
        // "deployment" was not claimed by the refused request.
        c.claim(&keys(&["deployment"]), "c").unwrap();
        c.finish(&keys(&["deployment"]), "c", Duration::from_secs(60));
        let cooling = c.claim(&keys(&["deployment"]), "d").unwrap_err();
        assert_eq!(cooling.execution_id, "c");
    }
}
