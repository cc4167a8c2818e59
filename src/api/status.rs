//! The one mapping from engine errors to gRPC status codes.

use tonic::{Code, Status};

use crate::engine::EngineError;

impl From<EngineError> for Status {
    fn from(err: EngineError) -> Self {
        let code = match &err {
            EngineError::InvalidArgument { .. } => Code::InvalidArgument,
            EngineError::NotFound(_) => Code::NotFound,
            EngineError::FailedPrecondition(_) => Code::FailedPrecondition,
            EngineError::PermissionDenied(_) => Code::PermissionDenied,
            EngineError::AlreadyExists(_) => Code::AlreadyExists,
            EngineError::QueueFull { .. } | EngineError::Exhausted { .. } => {
                Code::ResourceExhausted
            }
            EngineError::ShuttingDown | EngineError::Unavailable(_) => Code::Unavailable,
            EngineError::Internal(_) => Code::Internal,
        };
        let mut status = Status::new(code, err.to_string());
        if let EngineError::Exhausted {
            retry_after: Some(wait),
            ..
        } = &err
        {
            // As HTTP's Retry-After: whole seconds, rounded up.
            let seconds = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
            if let Ok(value) = seconds.to_string().parse() {
                status.metadata_mut().insert("retry-after", value);
            }
        }
        status
    }
}
