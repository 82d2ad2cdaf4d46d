//! The object-store backend: Distribution's layout as objects in an
//! S3-compatible bucket, through the `object_store` crate (its S3 client
//! signs requests, retries throttling and 5xx with backoff, and exposes the
//! multipart upload ids and parts that let any node continue an upload).
//!
//! The store's blocking methods wait here for the asynchronous client (on
//! the blocking pool, so no async worker is held). An object appears whole
//! or not at all: small objects are one PUT, large ones a completed
//! multipart upload.

use std::future::Future;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as Key;
use object_store::signer::Signer;
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload,
    RetryConfig,
};

use super::{Entry, Meta, Objects};
use crate::storage::error::StorageError;

/// `storage.s3` as Distribution writes it, after validation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Config {
    /// Absent: the usual AWS environment and credential chain.
    pub accesskey: Option<String>,
    pub secretkey: Option<String>,
    pub sessiontoken: Option<String>,
    pub region: String,
    /// An S3-compatible endpoint (`http://127.0.0.1:8333`); absent: AWS.
    pub regionendpoint: Option<String>,
    pub bucket: String,
    pub forcepathstyle: bool,
    /// `https` to the endpoint when it names no scheme.
    pub secure: bool,
    pub skipverify: bool,
    /// Where the layout starts inside the bucket (`/` or `/registry`).
    pub rootdirectory: String,
    /// Size of the parts of multipart uploads (at least 5 MiB).
    pub chunksize: usize,
    /// `storage.redirect.disable`: stream blobs through the node instead of
    /// sending clients to presigned URLs.
    pub redirect_disable: bool,
}

/// S3's smallest part but the last, and Distribution's default part size.
pub const MIN_CHUNK_SIZE: usize = 5 << 20;
pub const DEFAULT_CHUNK_SIZE: usize = 10 << 20;

impl S3Config {
    /// A bucket on an S3-compatible endpoint of plain HTTP with static keys,
    /// path style, the default part size, blobs streamed by the registry
    /// (tests and benchmarks on a local object store).
    pub fn local(endpoint: &str, bucket: &str, keys: (&str, &str), root: &str) -> S3Config {
        S3Config {
            accesskey: Some(keys.0.into()),
            secretkey: Some(keys.1.into()),
            sessiontoken: None,
            region: "us-east-1".into(),
            regionendpoint: Some(endpoint.into()),
            bucket: bucket.into(),
            forcepathstyle: true,
            secure: false,
            skipverify: false,
            rootdirectory: root.into(),
            chunksize: DEFAULT_CHUNK_SIZE,
            redirect_disable: true,
        }
    }

    /// The root of the layout as a key prefix: no leading or trailing `/`.
    pub fn root_key(&self) -> String {
        self.rootdirectory.trim_matches('/').to_string()
    }

    fn endpoint(&self) -> Option<String> {
        self.regionendpoint.as_ref().map(|e| {
            if e.contains("://") {
                e.trim_end_matches('/').to_string()
            } else {
                let scheme = if self.secure { "https" } else { "http" };
                format!("{scheme}://{}", e.trim_end_matches('/'))
            }
        })
    }
}

/// An object as a listing or a HEAD shows it: enough to tell whether it
/// was written again since (the collector's test of use, `in_use`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    /// The key below the listed prefix (`a/b/c`); empty from a HEAD.
    pub name: String,
    pub size: u64,
    pub modified: SystemTime,
    pub etag: Option<String>,
}

impl Listed {
    fn from_meta(name: String, m: &object_store::ObjectMeta) -> Listed {
        Listed {
            name,
            size: m.size,
            modified: SystemTime::from(m.last_modified),
            etag: m.e_tag.clone(),
        }
    }
}

/// One bucket, and the runtime its client runs on.
pub struct S3 {
    client: Arc<AmazonS3>,
    runtime: Runtime,
    bucket: String,
    pub chunk_size: usize,
    pub redirect: bool,
}

/// The runtime the client's futures are driven by: the one we were opened
/// in, or our own for callers without one (command-line tools).
enum Runtime {
    Shared(tokio::runtime::Handle),
    Own(tokio::runtime::Runtime),
}

impl S3 {
    /// Build the client and check, with one request, that the bucket is
    /// there and the keys open it: a wrong key, a missing bucket or an
    /// unreachable endpoint stop the start with a sentence that says which.
    pub fn connect(config: &S3Config) -> Result<S3, StorageError> {
        // One crypto provider for every TLS client in the process (reqwest
        // takes the process default); installing twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let runtime = match tokio::runtime::Handle::try_current() {
            Ok(h) => Runtime::Shared(h),
            Err(_) => Runtime::Own(
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .map_err(|e| StorageError::io(Path::new("s3"), e))?,
            ),
        };
        let endpoint = config.endpoint();
        let options = ClientOptions::new()
            // Bodies of large blobs stream for long; a read that stalls is
            // what must fail, not a transfer that takes a while.
            .with_timeout_disabled()
            .with_read_timeout(Duration::from_secs(60))
            .with_connect_timeout(Duration::from_secs(5))
            .with_allow_invalid_certificates(config.skipverify)
            .with_allow_http(
                endpoint
                    .as_deref()
                    .is_some_and(|e| e.starts_with("http://")),
            );
        let virtual_hosted = !config.forcepathstyle;
        let mut builder = AmazonS3Builder::from_env()
            .with_client_options(options)
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_virtual_hosted_style_request(virtual_hosted)
            .with_retry(RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: 6,
                retry_timeout: Duration::from_secs(30),
            });
        if let Some(e) = &endpoint {
            // In virtual-hosted style the client expects the bucket in the
            // endpoint's host; Distribution's users give the plain endpoint.
            let e = match e.split_once("://") {
                Some((scheme, host)) if virtual_hosted => {
                    format!("{scheme}://{}.{host}", config.bucket)
                }
                _ => e.clone(),
            };
            builder = builder.with_endpoint(e);
        }
        if let (Some(a), Some(s)) = (&config.accesskey, &config.secretkey) {
            builder = builder.with_access_key_id(a).with_secret_access_key(s);
        }
        if let Some(t) = &config.sessiontoken {
            builder = builder.with_token(t);
        }
        let client = builder
            .build()
            .map_err(|e| StorageError::Unavailable(format!("s3 configuration: {e}")))?;
        let s3 = S3 {
            client: Arc::new(client),
            runtime,
            bucket: config.bucket.clone(),
            chunk_size: config.chunksize,
            redirect: !config.redirect_disable,
        };
        s3.probe(&config.root_key())?;
        Ok(s3)
    }

    /// One listing of the root: the bucket exists and the keys may read it.
    fn probe(&self, root: &str) -> Result<(), StorageError> {
        let prefix = (!root.is_empty()).then(|| Key::from(root));
        let first = self.wait(async {
            let mut list = self.client.list(prefix.as_ref());
            list.next().await.transpose()
        });
        match first {
            Ok(_) => Ok(()),
            Err(e) => Err(StorageError::Unavailable(self.explain(&e))),
        }
    }

    /// A sentence for an error at start: which of the usual mistakes it is.
    fn explain(&self, e: &object_store::Error) -> String {
        let text = e.to_string();
        let bucket = &self.bucket;
        if text.contains("NoSuchBucket") {
            format!("s3: bucket {bucket:?} does not exist (storage.s3.bucket)")
        } else if [
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
            "AccessDenied",
        ]
        .iter()
        .any(|c| text.contains(c))
            || matches!(
                e,
                object_store::Error::PermissionDenied { .. }
                    | object_store::Error::Unauthenticated { .. }
            )
        {
            format!(
                "s3: the credentials were refused for bucket {bucket:?} \
                 (storage.s3.accesskey / secretkey)"
            )
        } else if is_transport(e) {
            format!(
                "s3: cannot reach the object store (storage.s3.regionendpoint): {}",
                last_source(e)
            )
        } else {
            format!("s3: bucket {bucket:?}: {text}")
        }
    }

    /// Run the client's future to its end from blocking code.
    pub fn wait<F: Future>(&self, f: F) -> F::Output {
        match &self.runtime {
            // On the blocking pool this just blocks; on an async worker it
            // first hands the worker's other tasks to another thread.
            Runtime::Shared(h) => tokio::task::block_in_place(|| h.block_on(f)),
            Runtime::Own(rt) => rt.block_on(f),
        }
    }

    fn key(path: &Path) -> Key {
        Key::from(path.to_string_lossy().trim_start_matches('/'))
    }

    pub async fn get(&self, path: &Path) -> Result<Option<Bytes>, StorageError> {
        match self.client.get(&Self::key(path)).await {
            Ok(r) => r.bytes().await.map(Some).map_err(|e| fail(path, e)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(fail(path, e)),
        }
    }

    pub async fn put(&self, path: &Path, data: PutPayload) -> Result<(), StorageError> {
        self.client
            .put(&Self::key(path), data)
            .await
            .map(drop)
            .map_err(|e| fail(path, e))
    }

    /// The bytes `start..start+len` of an object, as they arrive.
    pub async fn read_range(
        &self,
        path: &Path,
        start: u64,
        len: u64,
    ) -> Result<BoxStream<'static, io::Result<Bytes>>, StorageError> {
        if len == 0 {
            // An empty range is no range to the object store; nothing to read.
            return Ok(futures_util::stream::empty().boxed());
        }
        let options = GetOptions {
            range: Some(GetRange::Bounded(start..start + len)),
            ..GetOptions::default()
        };
        let got = self
            .client
            .get_opts(&Self::key(path), options)
            .await
            .map_err(|e| fail(path, e))?;
        Ok(got.into_stream().map_err(io::Error::other).boxed())
    }

    /// A URL that lets its holder GET the object for a while.
    pub async fn presigned_get(&self, path: &Path) -> Result<String, StorageError> {
        self.client
            .signed_url(
                http::Method::GET,
                &Self::key(path),
                Duration::from_secs(20 * 60),
            )
            .await
            .map(|u| u.to_string())
            .map_err(|e| fail(path, e))
    }

    pub async fn create_multipart(&self, path: &Path) -> Result<String, StorageError> {
        self.client
            .create_multipart(&Self::key(path))
            .await
            .map_err(|e| fail(path, e))
    }

    /// Upload part `index` (from 0) of a multipart upload; its id (the ETag)
    /// is what completing needs.
    pub async fn put_part(
        &self,
        path: &Path,
        upload: &str,
        index: usize,
        data: PutPayload,
    ) -> Result<String, StorageError> {
        self.client
            .put_part(&Self::key(path), &upload.to_string(), index, data)
            .await
            .map(|p| p.content_id)
            .map_err(|e| fail(path, e))
    }

    pub async fn complete_multipart(
        &self,
        path: &Path,
        upload: &str,
        parts: &[String],
    ) -> Result<(), StorageError> {
        let parts = parts
            .iter()
            .map(|p| PartId {
                content_id: p.clone(),
            })
            .collect();
        self.client
            .complete_multipart(&Self::key(path), &upload.to_string(), parts)
            .await
            .map(drop)
            .map_err(|e| fail(path, e))
    }

    pub async fn abort_multipart(&self, path: &Path, upload: &str) -> Result<(), StorageError> {
        match self
            .client
            .abort_multipart(&Self::key(path), &upload.to_string())
            .await
        {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(fail(path, e)),
        }
    }

    /// A copy made by the object store itself; the bytes do not pass here.
    pub async fn copy(&self, from: &Path, to: &Path) -> Result<(), StorageError> {
        self.client
            .copy(&Self::key(from), &Self::key(to))
            .await
            .map_err(|e| fail(from, e))
    }

    async fn delete_prefix(&self, dir: &Path) -> Result<(), StorageError> {
        let prefix = Self::key(dir);
        let keys = self
            .client
            .list(Some(&prefix))
            .map_ok(|m| m.location)
            .boxed();
        self.delete_stream(dir, keys).await
    }

    /// Delete the objects at `keys` in batches (DeleteObjects, up to a
    /// thousand keys a request); a key already gone is no error.
    pub async fn delete_many(&self, keys: &[std::path::PathBuf]) -> Result<(), StorageError> {
        let Some(first) = keys.first() else {
            return Ok(());
        };
        let keys: Vec<object_store::Result<Key>> = keys.iter().map(|k| Ok(Self::key(k))).collect();
        self.delete_stream(first, futures_util::stream::iter(keys).boxed())
            .await
    }

    async fn delete_stream(
        &self,
        context: &Path,
        keys: BoxStream<'static, object_store::Result<Key>>,
    ) -> Result<(), StorageError> {
        let mut deleted = self.client.delete_stream(keys);
        while let Some(r) = deleted.next().await {
            match r {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(fail(context, e)),
            }
        }
        Ok(())
    }

    /// Every object under `dir`, at any depth, with its size, time and ETag:
    /// one paged listing.
    pub async fn list_all(&self, dir: &Path) -> Result<Vec<Listed>, StorageError> {
        let prefix = Self::key(dir);
        let listed: Vec<object_store::ObjectMeta> = self
            .client
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| fail(dir, e))?;
        Ok(listed
            .iter()
            .filter_map(|m| {
                let parts: Vec<_> = m.location.prefix_match(&prefix)?.collect();
                let names: Vec<&str> = parts.iter().map(|p| p.as_ref()).collect();
                (!names.is_empty()).then(|| Listed::from_meta(names.join("/"), m))
            })
            .collect())
    }

    /// One object's size, time and ETag, or `None` if it does not exist.
    pub async fn head(&self, path: &Path) -> Result<Option<Listed>, StorageError> {
        match self.client.head(&Self::key(path)).await {
            Ok(m) => Ok(Some(Listed::from_meta(String::new(), &m))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(fail(path, e)),
        }
    }
}

impl Objects for S3 {
    fn read(&self, key: &Path) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.wait(self.get(key))?.map(|b| b.to_vec()))
    }

    fn write(&self, key: &Path, data: &[u8]) -> Result<(), StorageError> {
        self.wait(self.put(key, PutPayload::from(Bytes::copy_from_slice(data))))
    }

    fn stat(&self, key: &Path) -> Result<Option<Meta>, StorageError> {
        Ok(self.wait(self.head(key))?.map(|l| Meta {
            size: l.size,
            modified: l.modified,
        }))
    }

    /// An object's time cannot be set in place; existence is what the
    /// server learns here. (A blob in use is claimed instead: `in_use`.)
    fn touch(&self, key: &Path) -> Result<bool, StorageError> {
        Ok(self.stat(key)?.is_some())
    }

    fn delete(&self, key: &Path) -> Result<(), StorageError> {
        match self.wait(self.client.delete(&Self::key(key))) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(fail(key, e)),
        }
    }

    fn delete_dir(&self, dir: &Path) -> Result<(), StorageError> {
        self.wait(self.delete_prefix(dir))
    }

    fn list(&self, dir: &Path) -> Result<Vec<Entry>, StorageError> {
        let listed = self
            .wait(self.client.list_with_delimiter(Some(&Self::key(dir))))
            .map_err(|e| fail(dir, e))?;
        let name = |k: &Key| k.filename().map(str::to_string);
        let dirs = listed
            .common_prefixes
            .iter()
            .filter_map(name)
            .map(|name| Entry { name, is_dir: true });
        let files = listed
            .objects
            .iter()
            .filter_map(|m| name(&m.location))
            .map(|name| Entry {
                name,
                is_dir: false,
            });
        Ok(dirs.chain(files).collect())
    }

    fn list_after(&self, dir: &Path, after: &str) -> Result<Vec<String>, StorageError> {
        let prefix = Self::key(dir);
        let offset = Self::key(&dir.join(after));
        let listed: Vec<object_store::ObjectMeta> = self
            .wait(
                self.client
                    .list_with_offset(Some(&prefix), &offset)
                    .try_collect(),
            )
            .map_err(|e| fail(dir, e))?;
        let mut names: Vec<String> = listed
            .iter()
            // Direct children only; the offset is exclusive already.
            .filter(|m| {
                m.location
                    .prefix_match(&prefix)
                    .is_some_and(|mut p| p.next().is_some() && p.next().is_none())
            })
            .filter_map(|m| m.location.filename().map(str::to_string))
            .filter(|n| n.as_str() > after)
            .collect();
        names.sort();
        Ok(names)
    }

    fn walk(&self, dir: &Path) -> Result<Vec<String>, StorageError> {
        let listed = self.wait(self.list_all(dir))?;
        Ok(listed.into_iter().map(|l| l.name).collect())
    }

    fn read_many(&self, keys: &[std::path::PathBuf]) -> Result<Vec<Option<Vec<u8>>>, StorageError> {
        // Some dozens in flight: enough to hide the round trips, few enough
        // not to crowd the object store.
        let reads = futures_util::stream::iter(keys.iter().map(|k| self.get(k)))
            .buffered(32)
            .map_ok(|b| b.map(|b| b.to_vec()))
            .try_collect();
        self.wait(reads)
    }

    fn stat_many(&self, keys: &[std::path::PathBuf]) -> Result<Vec<Option<Meta>>, StorageError> {
        let heads = futures_util::stream::iter(keys.iter().map(|k| self.head(k)))
            .buffered(32)
            .map_ok(|l| {
                l.map(|l| Meta {
                    size: l.size,
                    modified: l.modified,
                })
            })
            .try_collect();
        self.wait(heads)
    }

    fn mark(&self, key: &Path) -> Result<(), StorageError> {
        self.wait(self.put(key, PutPayload::default()))
    }
}

/// An object-store error as the store's: the key, and what failed. An
/// object store that cannot be reached, or answers 5xx past the retries,
/// makes the registry unavailable (503), not broken.
fn fail(path: &Path, e: object_store::Error) -> StorageError {
    let key = path.display();
    if is_transport(&e)
        || e.to_string()
            .contains("Server returned non-2xx status code: 5")
    {
        return StorageError::Unavailable(format!(
            "object store unavailable at {key}: {}",
            last_source(&e)
        ));
    }
    let kind = match e {
        object_store::Error::NotFound { .. } => io::ErrorKind::NotFound,
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => io::ErrorKind::PermissionDenied,
        _ => io::ErrorKind::Other,
    };
    StorageError::io(path, io::Error::new(kind, e.to_string()))
}

/// Whether the request never got an answer (refused, reset, timed out).
fn is_transport(e: &object_store::Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err
            .downcast_ref::<object_store::client::HttpError>()
            .is_some()
        {
            return true;
        }
        cur = err.source();
    }
    false
}

/// The innermost cause: the one a person can act on.
fn last_source(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}
