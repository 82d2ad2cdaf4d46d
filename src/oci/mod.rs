//! The vocabulary of the distribution API: digests, repository names, tags and
//! references, media types, manifest parsing and the spec's error codes.
//!
//! Nothing here does I/O. Every type is built only by parsing (`FromStr`), so
//! a value that exists is valid and no code below the router checks it again.

pub mod digest;
pub mod errors;
pub mod manifest;
pub mod media;
pub mod name;

pub use digest::{Algorithm, Digest, Hasher};
pub use errors::ErrorCode;
pub use manifest::{Descriptor, Manifest, ManifestError};
pub use name::{Reference, RepoName, Tag};
