//! The one mapping from engine errors to gRPC status codes, and the correction of the codes
//! tonic gives requests it cannot decode.

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

/// What tonic answers a request whose protobuf cannot be decoded (nested deeper than the
/// decoder allows, malformed): `INTERNAL`, as if the server had failed. It is the caller's
/// input, so it becomes `INVALID_ARGUMENT` naming the request; a message over the size limit
/// (`OUT_OF_RANGE`) becomes `RESOURCE_EXHAUSTED`, as the gRPC spec has it. Applied to every
/// response as a layer of the gRPC server; other responses pass untouched.
pub(super) fn correct_decode_errors<B>(mut response: http::Response<B>) -> http::Response<B> {
    const UNDECODABLE: &str = "failed to decode Protobuf message";
    const TOO_LARGE: &str = "message length too large";
    let headers = response.headers_mut();
    let code = headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok());
    let message = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .map(percent_decode)
        .unwrap_or_default();
    let corrected = match code {
        Some(c) if c == Code::Internal as i32 && message.contains(UNDECODABLE) => {
            Some((Code::InvalidArgument, undecodable(&message)))
        }
        Some(c) if c == Code::OutOfRange as i32 && message.contains(TOO_LARGE) => {
            Some((Code::ResourceExhausted, format!("request: {message}")))
        }
        _ => None,
    };
    if let Some((code, message)) = corrected {
        let status = Status::new(code, message);
        let _ = status.add_header(headers);
    }
    response
}

/// prost names the path to what it could not decode, innermost first
/// (`ListValue.values: Value.kind: … Struct.fields: DryRunRequest.parameters: recursion limit
/// reached`): the refusal names the request's own field and the reason, not the whole path.
fn undecodable(message: &str) -> String {
    let parts: Vec<&str> = message.split(": ").collect();
    let field = parts
        .iter()
        .filter_map(|part| part.split_once('.'))
        .filter(|(message, field)| {
            message.ends_with("Request") && !field.is_empty() && !field.contains(' ')
        })
        .map(|(_, field)| field)
        .next_back()
        .unwrap_or("request");
    let reason = parts.last().copied().unwrap_or_default();
    format!("{field}: cannot be decoded: {reason}")
}

/// `grpc-message` is percent-encoded (gRPC over HTTP/2, "Responses").
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_response(code: Code, message: &str) -> http::Response<()> {
        let mut response = http::Response::new(());
        let _ = Status::new(code, message).add_header(response.headers_mut());
        response
    }

    fn status_of(response: &http::Response<()>) -> (String, String) {
        let get = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v: &http::HeaderValue| v.to_str().ok())
                .map(percent_decode)
                .unwrap_or_default()
        };
        (get("grpc-status"), get("grpc-message"))
    }

    #[test]
    fn an_undecodable_request_is_the_callers_invalid_argument() {
        let response = correct_decode_errors(mk_response(
            Code::Internal,
            "failed to decode Protobuf message: ListValue.values: Value.kind: Struct.fields: \
             DryRunRequest.parameters: recursion limit reached",
        ));
        let (code, message) = status_of(&response);
        assert_eq!(code, (Code::InvalidArgument as i32).to_string());
        assert_eq!(
            message,
            "parameters: cannot be decoded: recursion limit reached"
        );
    }

    #[test]
    fn other_statuses_pass_untouched() {
        let response = correct_decode_errors(mk_response(Code::Internal, "internal: a bug"));
        assert_eq!(status_of(&response).0, (Code::Internal as i32).to_string());
        let ok = correct_decode_errors(http::Response::new(()));
        assert!(ok.headers().get("grpc-status").is_none());
    }
}
