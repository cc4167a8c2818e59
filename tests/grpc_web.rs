//! gRPC-Web over HTTP/1.1, as a browser sends it: hand-built requests on a plain TCP
//! connection to the gRPC port, and the response's length-prefixed frames read back.

mod common;

use common::{mk_request, mk_target, Harness};
use executor_service::api::proto;
use prost::Message;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A grpc-web frame: data (flag 0) or trailers (flag 0x80).
#[derive(Debug)]
struct Frame {
    trailers: bool,
    payload: Vec<u8>,
}

/// POSTs one grpc-web call over HTTP/1.1 and returns the status line, headers and frames.
async fn grpc_web_call(
    addr: std::net::SocketAddr,
    method: &str,
    message: &impl Message,
) -> (String, String, Vec<Frame>) {
    let encoded = message.encode_to_vec();
    let mut body = vec![0u8];
    body.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
    body.extend_from_slice(&encoded);
    let head = format!(
        "POST /executor.v1.ExecutorService/{method} HTTP/1.1\r\n\
         Host: {addr}\r\n\
         Content-Type: application/grpc-web+proto\r\n\
         Accept: application/grpc-web+proto\r\n\
         X-Grpc-Web: 1\r\n\
         X-User-Agent: grpc-web-javascript/0.1\r\n\
         Content-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(60),
        stream.read_to_end(&mut raw),
    )
    .await
    .expect("the response ended")
    .expect("read response");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let (status_line, headers) = head.split_once("\r\n").unwrap_or((&head, ""));
    let mut body = raw[split + 4..].to_vec();
    if headers
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    (
        status_line.to_string(),
        headers.to_ascii_lowercase(),
        frames(&body),
    )
}

/// Decodes an HTTP/1.1 chunked body.
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let size_text = String::from_utf8_lossy(&raw[..line_end]).to_string();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
            .expect("hex chunk size");
        raw = &raw[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

fn frames(mut body: &[u8]) -> Vec<Frame> {
    let mut out = Vec::new();
    while body.len() >= 5 {
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        out.push(Frame {
            trailers: body[0] & 0x80 != 0,
            payload: body[5..5 + len].to_vec(),
        });
        body = &body[5 + len..];
    }
    assert!(body.is_empty(), "trailing bytes after the last frame");
    out
}

fn grpc_status(frames: &[Frame]) -> String {
    let trailers = frames.last().expect("frames");
    assert!(trailers.trailers, "the last frame carries the trailers");
    String::from_utf8_lossy(&trailers.payload)
        .lines()
        .find_map(|l| l.strip_prefix("grpc-status:").map(|s| s.trim().to_string()))
        .expect("grpc-status trailer")
}

#[tokio::test]
async fn a_browser_lists_actions_over_grpc_web_on_http1() {
    let h = Harness::demo().await;
    let (status_line, headers, frames) =
        grpc_web_call(h.addr, "ListActions", &proto::ListActionsRequest {}).await;
    assert!(status_line.starts_with("HTTP/1.1 200"), "{status_line}");
    assert!(
        headers.contains("content-type: application/grpc-web+proto"),
        "{headers}"
    );
    assert_eq!(grpc_status(&frames), "0");
    let data: Vec<&Frame> = frames.iter().filter(|f| !f.trailers).collect();
    assert_eq!(data.len(), 1);
    let response = proto::ListActionsResponse::decode(data[0].payload.as_slice()).unwrap();
    assert!(response
        .actions
        .iter()
        .any(|a| a.name == "scale_deployment"));
}

#[tokio::test]
async fn a_browser_watches_an_execution_over_grpc_web_to_its_terminal_event() {
    let h = Harness::demo().await;
    let mut client = h.grpc().await;
    let execution = client
        .execute(mk_request(
            "scale_deployment",
            mk_target("production", "Deployment", "web"),
            json!({"replicas": 4}),
        ))
        .await
        .unwrap()
        .into_inner()
        .execution
        .unwrap();
    let (status_line, _, frames) = grpc_web_call(
        h.addr,
        "WatchExecution",
        &proto::WatchExecutionRequest {
            execution_id: execution.id.clone(),
            from_sequence: 0,
        },
    )
    .await;
    assert!(status_line.starts_with("HTTP/1.1 200"), "{status_line}");
    assert_eq!(grpc_status(&frames), "0");
    let events: Vec<proto::ExecutionEvent> = frames
        .iter()
        .filter(|f| !f.trailers)
        .map(|f| {
            proto::WatchExecutionResponse::decode(f.payload.as_slice())
                .unwrap()
                .event
                .unwrap()
        })
        .collect();
    let sequences: Vec<u64> = events.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, (1..=events.len() as u64).collect::<Vec<_>>());
    assert_eq!(
        events.last().unwrap().state,
        proto::ExecutionState::Succeeded as i32
    );
}

#[tokio::test]
async fn a_grpc_web_error_arrives_as_a_trailer_naming_the_field() {
    let h = Harness::demo().await;
    let (_, headers, frames) = grpc_web_call(
        h.addr,
        "Execute",
        &mk_request(
            "scale_deployment",
            mk_target("production", "Deployment", "web"),
            json!({"replicas": "abc"}),
        ),
    )
    .await;
    // An error before any message comes as a trailers-only response: in the headers.
    let status = if frames.is_empty() {
        headers
            .lines()
            .find_map(|l| l.strip_prefix("grpc-status:").map(|s| s.trim().to_string()))
            .expect("grpc-status header")
    } else {
        grpc_status(&frames)
    };
    assert_eq!(status, (tonic::Code::InvalidArgument as i32).to_string());
}
