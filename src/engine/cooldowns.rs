//! Cooldowns per target, checked and claimed atomically: of two concurrent requests on one
//! target, one claims it and the other is refused with the time the cooldown ends.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use chrono::{DateTime, Utc};

/// Who holds a target, and until when.
#[derive(Debug, Clone)]
struct Claim {
    execution_id: String,
    /// `None` while the execution has not ended.
    until: Option<DateTime<Utc>>,
}

/// Why a request was refused by the cooldown.
#[derive(Debug, Clone)]
pub struct InCooldown {
    pub execution_id: String,
    pub until: Option<DateTime<Utc>>,
}

#[derive(Default)]
pub struct Cooldowns {
    claims: Mutex<HashMap<String, Claim>>,
}

impl Cooldowns {
    /// Claims `target` for `execution_id` unless another execution holds it (running, or
    /// ended less than its cooldown ago).
    pub fn claim(&self, target: &str, execution_id: &str) -> Result<(), InCooldown> {
        let mut claims = self.claims.lock().unwrap_or_else(|e| e.into_inner());
        let now = Utc::now();
        if let Some(claim) = claims.get(target) {
            if claim.until.is_none_or(|until| until > now) {
                return Err(InCooldown {
                    execution_id: claim.execution_id.clone(),
                    until: claim.until,
                });
            }
        }
        claims.insert(
            target.to_string(),
            Claim {
                execution_id: execution_id.to_string(),
                until: None,
            },
        );
        Ok(())
    }

    /// The execution ended: the cooldown runs from now.
    pub fn finish(&self, target: &str, execution_id: &str, cooldown: Duration) {
        let mut claims = self.claims.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(claim) = claims
            .get_mut(target)
            .filter(|c| c.execution_id == execution_id)
        {
            claim.until =
                Some(Utc::now() + chrono::Duration::from_std(cooldown).unwrap_or_default());
        }
        // Expired claims go, so the map stays as small as the recent work.
        let now = Utc::now();
        claims.retain(|_, c| c.until.is_none_or(|u| u > now));
    }

    /// The execution never changed anything (refused, cancelled while queued): no cooldown.
    pub fn release(&self, target: &str, execution_id: &str) {
        let mut claims = self.claims.lock().unwrap_or_else(|e| e.into_inner());
        if claims
            .get(target)
            .is_some_and(|c| c.execution_id == execution_id)
        {
            claims.remove(target);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_in_cooldown_is_refused_with_its_end() {
        let c = Cooldowns::default();
        c.claim("t", "a").unwrap();
        let busy = c.claim("t", "b").unwrap_err();
        assert_eq!((busy.execution_id.as_str(), busy.until), ("a", None));
        c.finish("t", "a", Duration::from_secs(300));
        let cooling = c.claim("t", "b").unwrap_err();
        assert!(cooling.until.unwrap() > Utc::now() + chrono::Duration::seconds(290));
    }

    #[test]
    fn a_zero_cooldown_frees_the_target_at_once_and_release_forgets_the_claim() {
        let c = Cooldowns::default();
        c.claim("t", "a").unwrap();
        c.finish("t", "a", Duration::ZERO);
        c.claim("t", "b").unwrap();
        c.release("t", "b");
        c.claim("t", "c").unwrap();
    }
}
