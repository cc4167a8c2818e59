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
            EngineError::QueueFull { .. } => Code::ResourceExhausted,
            EngineError::ShuttingDown | EngineError::Unavailable(_) => Code::Unavailable,
            EngineError::Internal(_) => Code::Internal,
        };
        Status::new(code, err.to_string())
    }
}
