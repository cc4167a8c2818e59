//! Turning rows into the domain's types and back: JSON bodies, timestamps, sequences, and
//! the database's errors.

use chrono::{DateTime, Timelike, Utc};
use sqlx::Row;

use super::super::StoreError;
use crate::domain::ExecutionView;

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> StoreError {
        StoreError::Backend(e.to_string())
    }
}

pub(super) fn corrupt(what: &str, id: &str, e: serde_json::Error) -> StoreError {
    StoreError::Backend(format!("stored {what} of {id} is not readable: {e}"))
}

pub(super) fn to_json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Backend(format!("encode: {e}")))
}

/// Timestamps are compared at microsecond precision (PostgreSQL's), on both backends, so that
/// a page cursor taken from a row equals the row's column exactly.
pub(super) fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    t.with_nanosecond(t.nanosecond() / 1_000 * 1_000)
        .unwrap_or(t)
}

pub(super) fn seq(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub(super) fn parse_view(id: &str, body: &str) -> Result<ExecutionView, StoreError> {
    serde_json::from_str(body).map_err(|e| corrupt("execution", id, e))
}

pub(super) fn parse_views<R: Row>(rows: Vec<R>) -> Result<Vec<ExecutionView>, StoreError>
where
    usize: sqlx::ColumnIndex<R>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    rows.into_iter()
        .map(|row| {
            let id: String = row.try_get(0)?;
            let body: String = row.try_get(1)?;
            parse_view(&id, &body)
        })
        .collect()
}
