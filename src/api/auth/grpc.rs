//! The gRPC adapter: a tonic interceptor that authenticates each ExecutorService call and
//! leaves the [`Caller`] in the request's extensions, where the handlers read it.

use super::{Authenticator, Caller};

/// Authenticates each ExecutorService call and leaves the [`Caller`] in its extensions.
#[derive(Debug, Clone)]
pub struct GrpcAuth(pub(super) Authenticator);

impl tonic::service::Interceptor for GrpcAuth {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        let certificates = request.peer_certs();
        let authorization = request
            .metadata()
            .get("authorization")
            .map(|v| v.as_bytes());
        let caller = self
            .0
            .authenticate(authorization, certificates.as_deref().map(Vec::as_slice))
            .map_err(|e| tonic::Status::unauthenticated(e.to_string()))?;
        request.extensions_mut().insert(caller);
        Ok(request)
    }
}

/// The [`Caller`] of a gRPC request (anonymous when no interceptor set one).
pub fn grpc_caller<T>(request: &tonic::Request<T>) -> Caller {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .unwrap_or_default()
}
