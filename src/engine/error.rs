//! The engine's one error type, and how the errors of the parts below it map into it.

use crate::{actions::ActionError, cluster::ClusterError, store::StoreError};

/// Why the engine refused or could not answer a request. Mapped to gRPC and HTTP codes in
/// one place per protocol (`api::status` for gRPC, `api::http` for HTTP).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The request is malformed; `field` names the offending field (`parameters.replicas`).
    #[error("{field}: {message}")]
    InvalidArgument { field: String, message: String },
    /// An execution or a target object does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The cluster's or execution's state forbids the request (includes cooldowns).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The policy or the caller's authorization forbids it.
    #[error("{0}")]
    PermissionDenied(String),
    /// The request_id is taken by a different request.
    #[error("{0}")]
    AlreadyExists(String),
    /// The queue is full.
    #[error("queue full: {capacity} executions are waiting; retry later")]
    QueueFull { capacity: usize },
    /// A bound other than the queue's is reached: the caller's rate, concurrent dry runs,
    /// executions waiting for approval. `retry_after` says when trying again makes sense.
    #[error("{message}")]
    Exhausted {
        message: String,
        retry_after: Option<std::time::Duration>,
    },
    /// The server is shutting down and takes no new work.
    #[error("shutting down: no new executions are accepted")]
    ShuttingDown,
    /// The cluster or the store could not be reached or answered with an error.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A bug.
    #[error("internal: {0}")]
    Internal(String),
}

impl EngineError {
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        EngineError::InvalidArgument {
            field: field.to_string(),
            message: message.into(),
        }
    }

    /// The field named by an [`EngineError::InvalidArgument`].
    pub fn field(&self) -> Option<&str> {
        match self {
            EngineError::InvalidArgument { field, .. } => Some(field),
            _ => None,
        }
    }
}

impl From<ActionError> for EngineError {
    fn from(err: ActionError) -> Self {
        match err {
            ActionError::InvalidParameter { field, message } => {
                EngineError::InvalidArgument { field, message }
            }
            ActionError::NotFound(what) => EngineError::NotFound(what),
            ActionError::Precondition(why) => EngineError::FailedPrecondition(why),
            ActionError::Cluster(ClusterError::Unknown { name, known }) => EngineError::invalid(
                "target.cluster",
                format!("unknown cluster {name:?} (configured: {known})"),
            ),
            ActionError::Kube(kube::Error::Api(status))
                if status.code == 422 || status.code == 400 =>
            {
                EngineError::FailedPrecondition(format!(
                    "the API server refused the change: {}",
                    status.message
                ))
            }
            // The cluster's RBAC said no: a permission, not an outage to retry.
            ActionError::Kube(kube::Error::Api(status)) if status.code == 403 => {
                EngineError::PermissionDenied(format!("the API server refused: {}", status.message))
            }
            ActionError::Rollout(e) => EngineError::FailedPrecondition(e.to_string()),
            ActionError::TargetLost(e) => EngineError::FailedPrecondition(e.to_string()),
            ActionError::Internal(e) => EngineError::Internal(e),
            other => EngineError::Unavailable(other.to_string()),
        }
    }
}

impl From<StoreError> for EngineError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::BadPageToken => {
                EngineError::invalid("page_token", "is not a token this server issued")
            }
            StoreError::DuplicateRequest {
                request_id,
                existing,
            } => EngineError::AlreadyExists(format!(
                "request_id {request_id:?} is already used by execution {existing}"
            )),
            StoreError::Backend(e) => EngineError::Unavailable(format!("store: {e}")),
        }
    }
}
