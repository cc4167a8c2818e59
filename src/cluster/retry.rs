//! Retrying Kubernetes calls that failed for a transient reason: the API server throttling
//! (429), failing (5xx) or refusing a write on a conflict (409, the call re-applies the same
//! change), or the connection dropping. Errors no wait can heal (403, 404) end the call at
//! once.

use std::{
    future::Future,
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

/// Attempts per call by default, the first included.
pub const MAX_ATTEMPTS: u32 = 5;
/// Retries allowed after a failed first attempt, at most.
pub const MAX_RETRIES: u32 = 20;

static ATTEMPTS: AtomicU32 = AtomicU32::new(MAX_ATTEMPTS);

/// Sets, for the whole process, how many times a transiently failed call is tried again
/// (`serve --kube-retries`, at most [`MAX_RETRIES`]).
pub fn set_retries(retries: u32) {
    ATTEMPTS.store(retries.min(MAX_RETRIES) + 1, Ordering::Relaxed);
}

/// Attempts per call, the first included.
pub fn attempts() -> u32 {
    ATTEMPTS.load(Ordering::Relaxed)
}
/// Backoff before the second attempt; doubled each time, capped.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Whether `err` may go away on its own.
pub fn is_transient(err: &kube::Error) -> bool {
    match err {
        kube::Error::Api(status) => matches!(status.code, 409 | 429 | 500 | 502 | 503 | 504),
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

/// Whether `err` can never go away by trying again: 403 Forbidden (the permission was
/// withdrawn) or 404 NotFound (the object, or its kind, is gone). Code that keeps trying
/// without a limit of attempts (a watch) must stop on these rather than spin to its timeout.
pub fn is_permanent(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if is_permanent_code(status.code))
}

/// The status codes of [`is_permanent`].
pub fn is_permanent_code(code: u16) -> bool {
    matches!(code, 403 | 404)
}

fn describe(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(status) => format!("{} {}", status.code, status.reason),
        other => other.to_string(),
    }
}

/// Runs `call` until it succeeds, fails for a non-transient reason, or [`attempts`] are
/// used; `on_retry` hears about each retry before its backoff.
///
/// # Errors
/// The last error.
pub async fn with_retries<T, F, Fut>(
    what: &str,
    mut on_retry: impl FnMut(String),
    mut call: F,
) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let mut backoff = FIRST_BACKOFF;
    let mut attempt = 1;
    let attempts = attempts();
    loop {
        match call().await {
            Ok(value) => return Ok(value),
            Err(err) if attempt < attempts && is_transient(&err) => {
                on_retry(format!(
                    "{what}: {}; retrying in {} (attempt {} of {attempts})",
                    describe(&err),
                    humantime::format_duration(backoff),
                    attempt + 1
                ));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                attempt += 1;
            }
            Err(err) => return Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn api_error(code: u16) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure("injected", "ServiceUnavailable")
                .with_code(code)
                .boxed(),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn transient_errors_are_retried_and_reported() {
        let calls = AtomicU32::new(0);
        let mut heard = Vec::new();
        let result = with_retries(
            "patch deployment web",
            |m| heard.push(m),
            || async {
                if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                    Err(api_error(503))
                } else {
                    Ok(7)
                }
            },
        )
        .await;
        assert_eq!(result.unwrap(), 7);
        assert_eq!(heard.len(), 2);
        assert!(
            heard[0].starts_with("patch deployment web: 503"),
            "{}",
            heard[0]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_permanent_error_is_not_retried() {
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = with_retries(
            "get",
            |_| {},
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(api_error(404))
            },
        )
        .await;
        assert!(result.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn forbidden_and_not_found_are_permanent_and_nothing_else_is() {
        for code in [403, 404] {
            assert!(is_permanent(&api_error(code)), "{code}");
            assert!(!is_transient(&api_error(code)), "{code}");
        }
        for code in [400, 409, 410, 422, 429, 500, 503] {
            assert!(!is_permanent(&api_error(code)), "{code}");
        }
    }
}
