//! `ApiError`: every failure the server answers, mapped once from the
//! storage and OCI layers to the spec's code, status and JSON envelope.

use std::io;

use http::{HeaderName, HeaderValue, Response, StatusCode};
use serde_json::json;

use super::body::{self, Body};
use crate::oci::ErrorCode;
use crate::storage::StorageError;

#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub detail: Option<serde_json::Value>,
    /// Extra headers the client needs (e.g. `Range` on an out-of-order chunk).
    pub headers: Vec<(HeaderName, String)>,
    /// What went wrong inside, for the log only (never sent to the client).
    pub internal: Option<String>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            detail: None,
            headers: Vec::new(),
            internal: None,
        }
    }

    pub fn with_detail(mut self, detail: serde_json::Value) -> ApiError {
        self.detail = Some(detail);
        self
    }

    pub fn with_header(mut self, name: HeaderName, value: impl Into<String>) -> ApiError {
        self.headers.push((name, value.into()));
        self
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The JSON envelope; `with_body` is false for HEAD requests.
    pub fn into_response(self, with_body: bool) -> Response<Body> {
        let status = self.status();
        let mut err = json!({ "code": self.code.code(), "message": self.message });
        if let Some(detail) = self.detail {
            err["detail"] = detail;
        }
        let bytes = serde_json::to_vec(&json!({ "errors": [err] })).unwrap_or_default();
        let mut resp = Response::new(if with_body {
            body::full(bytes.clone())
        } else {
            body::empty()
        });
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(http::header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
        for (name, value) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                h.insert(name, v);
            }
        }
        resp
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> ApiError {
        use StorageError as S;
        match e {
            S::BlobUnknown(d) => ApiError::new(ErrorCode::BlobUnknown, "blob unknown to registry")
                .with_detail(json!({ "digest": d.to_string() })),
            S::ManifestUnknown(r) => {
                ApiError::new(ErrorCode::ManifestUnknown, format!("manifest unknown: {r}"))
                    .with_detail(json!({ "reference": r }))
            }
            S::NameUnknown => ApiError::new(
                ErrorCode::NameUnknown,
                "repository name not known to registry",
            ),
            S::UploadUnknown => ApiError::new(
                ErrorCode::BlobUploadUnknown,
                "blob upload unknown to registry",
            ),
            e @ S::DigestMismatch { .. } => ApiError::new(ErrorCode::DigestInvalid, e.to_string()),
            S::ChunkOutOfOrder { have, got } => ApiError::new(
                ErrorCode::ChunkOutOfOrder,
                format!("chunk starts at {got} but the upload has {have} bytes"),
            )
            .with_header(http::header::RANGE, format!("0-{}", have.saturating_sub(1))),
            S::ManifestInvalid(m) => ApiError::new(ErrorCode::ManifestInvalid, m.to_string()),
            S::ManifestBlobUnknown(d) => ApiError::new(
                ErrorCode::ManifestBlobUnknown,
                format!("manifest references {d}, which is not in this repository: push it first"),
            )
            .with_detail(json!({ "digest": d.to_string() })),
            e @ S::ClientGone(_) => ApiError::new(ErrorCode::BlobUploadInvalid, e.to_string()),
            e @ (S::DeleteDisabled | S::ReadOnly) => {
                ApiError::new(ErrorCode::Unsupported, e.to_string())
            }
            S::Io { path, source } => {
                let (code, message) = match source.kind() {
                    io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => (
                        ErrorCode::StorageFull,
                        "storage is full: no space left on the registry's disk",
                    ),
                    io::ErrorKind::ReadOnlyFilesystem | io::ErrorKind::PermissionDenied => (
                        ErrorCode::StorageUnavailable,
                        "storage refuses writes (read-only file system or permissions)",
                    ),
                    _ => (ErrorCode::Unknown, "storage error"),
                };
                let mut err = ApiError::new(code, message);
                err.internal = Some(format!("{path}: {source}"));
                err
            }
            S::Unavailable(why) => {
                let mut err = ApiError::new(
                    ErrorCode::StorageUnavailable,
                    "storage is unavailable: try again shortly",
                )
                .with_header(http::header::RETRY_AFTER, "5");
                err.internal = Some(why);
                err
            }
        }
    }
}

impl From<crate::auth::AuthFailure> for ApiError {
    fn from(f: crate::auth::AuthFailure) -> ApiError {
        match f {
            crate::auth::AuthFailure::Unauthorized { challenge, message } => {
                let err = ApiError::new(ErrorCode::Unauthorized, message);
                match challenge {
                    Some(c) => err.with_header(http::header::WWW_AUTHENTICATE, c),
                    None => err,
                }
            }
            crate::auth::AuthFailure::Denied { message } => {
                ApiError::new(ErrorCode::Denied, message)
            }
        }
    }
}
