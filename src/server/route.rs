//! The one router: a request path becomes a `Route` whose variants are the
//! spec's endpoints, with every name, reference and digest already parsed.
//!
//! Names may have any depth, so the path is split at its end: the last
//! segment is the parameter (reference, digest, upload id) and the keyword
//! before it (`manifests`, `blobs/uploads`, `blobs`, `referrers`,
//! `tags/list`) names the endpoint; everything before is the name, never
//! cut at a fixed number of segments.

use crate::oci::{Digest, ErrorCode, Reference, RepoName};
use crate::storage::UploadId;

use super::error::ApiError;

#[derive(Clone, Debug, PartialEq)]
pub enum Route {
    /// `/v2/`: the API version check.
    Base,
    /// `/v2/_catalog`
    Catalog,
    /// `/v2/<name>/tags/list`
    Tags(RepoName),
    /// `/v2/<name>/manifests/<reference>`
    Manifest(RepoName, Reference),
    /// `/v2/<name>/blobs/<digest>`
    Blob(RepoName, Digest),
    /// `/v2/<name>/blobs/uploads/`
    UploadStart(RepoName),
    /// `/v2/<name>/blobs/uploads/<id>`
    Upload(RepoName, UploadId),
    /// `/v2/<name>/referrers/<digest>`
    Referrers(RepoName, Digest),
}

impl Route {
    /// A short stable name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Route::Base => "base",
            Route::Catalog => "catalog",
            Route::Tags(_) => "tags",
            Route::Manifest(..) => "manifest",
            Route::Blob(..) => "blob",
            Route::UploadStart(_) => "blob_upload",
            Route::Upload(..) => "blob_upload_chunk",
            Route::Referrers(..) => "referrers",
        }
    }

    /// Parse the part of the path after the configured prefix, e.g.
    /// `v2/library/ubuntu/manifests/latest`. `None` means not an API path.
    pub fn parse(path: &str) -> Option<Result<Route, ApiError>> {
        let rest = if path == "v2" || path == "v2/" {
            return Some(Ok(Route::Base));
        } else {
            path.strip_prefix("v2/")?
        };
        Some(parse_v2(rest))
    }
}

fn name(s: &str) -> Result<RepoName, ApiError> {
    s.parse().map_err(|e| {
        ApiError::new(
            ErrorCode::NameInvalid,
            format!("invalid repository name: {e}"),
        )
    })
}

fn digest(s: &str) -> Result<Digest, ApiError> {
    s.parse().map_err(|e| {
        ApiError::new(
            ErrorCode::DigestInvalid,
            format!("invalid digest {s:?}: {e}"),
        )
    })
}

fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such API endpoint")
}

fn parse_v2(rest: &str) -> Result<Route, ApiError> {
    if rest == "_catalog" {
        return Ok(Route::Catalog);
    }
    // References, digests and upload ids never contain '/': the last
    // segment is the parameter, and the segment(s) before it name the
    // endpoint. Whatever precedes that is the repository name, of any
    // depth and with any components (even "manifests" or "blobs").
    let (prefix, last) = rest.rsplit_once('/').ok_or_else(not_found)?;
    if let Some(n) = prefix.strip_suffix("/blobs/uploads") {
        let repo = name(n)?;
        if last.is_empty() {
            return Ok(Route::UploadStart(repo));
        }
        let id = UploadId::parse(last).ok_or_else(|| {
            ApiError::new(
                ErrorCode::BlobUploadUnknown,
                "upload id is not one this registry issued",
            )
        })?;
        return Ok(Route::Upload(repo, id));
    }
    if let Some(n) = prefix.strip_suffix("/manifests") {
        let repo = name(n)?;
        let reference = last.parse::<Reference>().map_err(|e| match e {
            crate::oci::name::ReferenceError::Digest(e) => ApiError::new(
                ErrorCode::DigestInvalid,
                format!("invalid digest {last:?}: {e}"),
            ),
            crate::oci::name::ReferenceError::Tag(e) => {
                ApiError::new(ErrorCode::TagInvalid, e.to_string())
            }
        })?;
        return Ok(Route::Manifest(repo, reference));
    }
    if let Some(n) = prefix.strip_suffix("/blobs") {
        // `/blobs/uploads` without the trailing slash starts an upload too.
        if last == "uploads" {
            return Ok(Route::UploadStart(name(n)?));
        }
        return Ok(Route::Blob(name(n)?, digest(last)?));
    }
    if let Some(n) = prefix.strip_suffix("/referrers") {
        return Ok(Route::Referrers(name(n)?, digest(last)?));
    }
    if let (Some(n), "list") = (prefix.strip_suffix("/tags"), last) {
        return Ok(Route::Tags(name(n)?));
    }
    Err(not_found())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn ok(path: &str) -> Route {
        Route::parse(path).unwrap().unwrap()
    }

    fn err(path: &str) -> ErrorCode {
        Route::parse(path).unwrap().unwrap_err().code
    }

    #[test]
    fn routes() {
        assert_eq!(ok("v2/"), Route::Base);
        assert_eq!(ok("v2"), Route::Base);
        assert_eq!(ok("v2/_catalog"), Route::Catalog);
        assert_eq!(
            ok("v2/a/b/c/d/tags/list"),
            Route::Tags("a/b/c/d".parse().unwrap())
        );
        assert_eq!(
            ok("v2/a/manifests/latest"),
            Route::Manifest("a".parse().unwrap(), "latest".parse().unwrap())
        );
        assert_eq!(
            ok(&format!("v2/x/blobs/y/blobs/{D}")),
            Route::Blob("x/blobs/y".parse().unwrap(), D.parse().unwrap())
        );
        assert_eq!(
            ok("v2/a/b/blobs/uploads/"),
            Route::UploadStart("a/b".parse().unwrap())
        );
        assert!(matches!(
            ok("v2/a/blobs/uploads/abc-123"),
            Route::Upload(..)
        ));
        assert!(matches!(
            ok(&format!("v2/a/referrers/{D}")),
            Route::Referrers(..)
        ));
        assert!(matches!(
            ok("v2/manifests/manifests/x"),
            Route::Manifest(..)
        ));
        assert!(Route::parse("v1/_ping").is_none());
    }

    #[test]
    fn errors() {
        assert_eq!(err("v2/UPPER/tags/list"), ErrorCode::NameInvalid);
        assert_eq!(err("v2/../etc/tags/list"), ErrorCode::NameInvalid);
        assert_eq!(err("v2/%2e%2e/manifests/latest"), ErrorCode::NameInvalid);
        assert_eq!(err("v2/a/manifests/has:colon"), ErrorCode::DigestInvalid);
        assert_eq!(err("v2/a/manifests/-bad"), ErrorCode::TagInvalid);
        assert_eq!(err("v2/a/blobs/sha256:abc"), ErrorCode::DigestInvalid);
        assert_eq!(
            err("v2/a/blobs/uploads/..%2f"),
            ErrorCode::BlobUploadUnknown
        );
        assert_eq!(
            err(&format!("v2/{}/tags/list", "a".repeat(300))),
            ErrorCode::NameInvalid
        );
        assert_eq!(err("v2/a/nothing"), ErrorCode::NotFound);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_path_routes_or_is_refused(path in prop_oneof![
            "\\PC{0,200}",
            "v2/[a-z0-9/._%-]{0,60}/(manifests|blobs|tags|referrers|blobs/uploads)/[a-zA-Z0-9:._/%-]{0,80}",
            "v2/(\\.\\./|%2e%2e/|/){0,4}[a-z]{0,5}/blobs/uploads/[a-z0-9-]{0,40}",
        ]) {
            // Whatever routes names a valid repository: nothing that
            // climbs out of the store's directory gets this far.
            if let Some(Ok(route)) = Route::parse(&path) {
                let name = match &route {
                    Route::Tags(n) | Route::Manifest(n, _) | Route::Blob(n, _) => Some(n.as_str()),
                    _ => None,
                };
                if let Some(n) = name {
                    prop_assert!(!n.split('/').any(|c| c.is_empty() || c == "." || c == ".."), "{path:?} -> {n:?}");
                }
            }
        }
    }
}
