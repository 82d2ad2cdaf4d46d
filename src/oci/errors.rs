//! The error codes of the distribution spec, each with its HTTP status.
//!
//! The server answers every failure with one of these in the spec's JSON
//! envelope `{"errors":[{"code","message","detail"}]}`.

/// One row of the spec's error code table (plus the Docker API's extras).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    TagInvalid,
    Unauthorized,
    Denied,
    Unsupported,
    TooManyRequests,
    PaginationNumberInvalid,
    RangeInvalid,
    /// A chunk that does not start where the upload ends (416).
    ChunkOutOfOrder,
    /// A request we could not route: no such endpoint.
    NotFound,
    /// The method is not defined for this endpoint.
    MethodNotAllowed,
    /// The request body is larger than we accept for this endpoint.
    TooLarge,
    /// The store is out of space.
    StorageFull,
    /// The store refuses writes (read-only file system, no permission).
    StorageUnavailable,
    /// Anything else: a bug or a failed disk.
    Unknown,
}

impl ErrorCode {
    /// The code string of the spec's table.
    pub fn code(self) -> &'static str {
        match self {
            ErrorCode::BlobUnknown => "BLOB_UNKNOWN",
            ErrorCode::BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            ErrorCode::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            ErrorCode::DigestInvalid => "DIGEST_INVALID",
            ErrorCode::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            ErrorCode::ManifestInvalid => "MANIFEST_INVALID",
            ErrorCode::ManifestUnknown => "MANIFEST_UNKNOWN",
            ErrorCode::NameInvalid => "NAME_INVALID",
            ErrorCode::NameUnknown => "NAME_UNKNOWN",
            ErrorCode::SizeInvalid => "SIZE_INVALID",
            ErrorCode::TagInvalid => "TAG_INVALID",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::Denied => "DENIED",
            ErrorCode::Unsupported | ErrorCode::NotFound | ErrorCode::MethodNotAllowed => {
                "UNSUPPORTED"
            }
            ErrorCode::TooManyRequests => "TOOMANYREQUESTS",
            ErrorCode::PaginationNumberInvalid => "PAGINATION_NUMBER_INVALID",
            ErrorCode::RangeInvalid => "RANGE_INVALID",
            ErrorCode::ChunkOutOfOrder => "BLOB_UPLOAD_INVALID",
            ErrorCode::TooLarge => "SIZE_INVALID",
            // Distribution's code for a 503 (errcode.ErrorCodeUnavailable).
            ErrorCode::StorageUnavailable => "UNAVAILABLE",
            ErrorCode::StorageFull | ErrorCode::Unknown => "UNKNOWN",
        }
    }

    /// The HTTP status the spec (or Distribution, where the spec is silent) uses.
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::BlobUnknown => 404,
            ErrorCode::BlobUploadInvalid => 400,
            ErrorCode::BlobUploadUnknown => 404,
            ErrorCode::DigestInvalid => 400,
            ErrorCode::ManifestBlobUnknown => 400,
            ErrorCode::ManifestInvalid => 400,
            ErrorCode::ManifestUnknown => 404,
            ErrorCode::NameInvalid => 400,
            ErrorCode::NameUnknown => 404,
            ErrorCode::SizeInvalid => 400,
            ErrorCode::TagInvalid => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Denied => 403,
            ErrorCode::Unsupported => 405,
            ErrorCode::TooManyRequests => 429,
            ErrorCode::PaginationNumberInvalid => 400,
            ErrorCode::RangeInvalid => 416,
            ErrorCode::ChunkOutOfOrder => 416,
            ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::TooLarge => 413,
            ErrorCode::StorageFull => 507,
            ErrorCode::StorageUnavailable => 503,
            ErrorCode::Unknown => 500,
        }
    }
}
