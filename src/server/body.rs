//! Response bodies, and request bodies as the storage layer consumes them.

use std::io;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};
use hyper::body::Incoming;

use super::error::ApiError;
use crate::oci::ErrorCode;
use crate::storage::ByteSource;

/// Every response body: empty, a buffer, or a stream from a file.
pub type Body = BoxBody<Bytes, io::Error>;

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

pub fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed()
}

/// How long a request body may go without sending a byte before the
/// request is abandoned: a client that stalls must not hold its upload
/// session (and a writer thread) for ever.
const BODY_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// A request body, read frame by frame.
pub struct RequestBody(pub Incoming);

impl ByteSource for RequestBody {
    async fn next_chunk(&mut self) -> Option<io::Result<Bytes>> {
        loop {
            let frame = match tokio::time::timeout(BODY_IDLE_TIMEOUT, self.0.frame()).await {
                Ok(frame) => frame?,
                Err(_) => {
                    return Some(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "request body stalled",
                    )))
                }
            };
            match frame {
                Ok(frame) => match frame.into_data() {
                    Ok(data) if data.is_empty() => continue,
                    Ok(data) => return Some(Ok(data)),
                    Err(_trailers) => continue,
                },
                Err(e) => return Some(Err(io::Error::other(e))),
            }
        }
    }
}

/// Read a whole body of at most `limit` bytes (manifests), refusing more
/// before it is all in memory.
pub async fn read_limited(
    body: Incoming,
    declared: Option<u64>,
    limit: u64,
) -> Result<Vec<u8>, ApiError> {
    let too_large = || {
        ApiError::new(
            ErrorCode::TooLarge,
            format!("manifest body exceeds the {limit}-byte limit (http.maxmanifestsize)"),
        )
    };
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut out = Vec::with_capacity(declared.unwrap_or(0) as usize);
    let mut src = RequestBody(body);
    while let Some(chunk) = src.next_chunk().await {
        let chunk = chunk.map_err(|e| {
            ApiError::new(
                ErrorCode::ManifestInvalid,
                format!("request body failed: {e}"),
            )
        })?;
        if out.len() as u64 + chunk.len() as u64 > limit {
            return Err(too_large());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Largest unread body we read and discard before answering an error, so
/// that a client still writing its chunk sees our answer rather than a
/// reset connection. Past this the connection is simply closed.
const DRAIN_LIMIT: u64 = 8 << 20;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// Read and discard what is left of a body, within bounds.
pub async fn drain(src: &mut RequestBody) {
    let mut seen = 0u64;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while let Some(Ok(chunk)) = src.next_chunk().await {
            seen += chunk.len() as u64;
            if seen > DRAIN_LIMIT {
                break;
            }
        }
    })
    .await;
}
