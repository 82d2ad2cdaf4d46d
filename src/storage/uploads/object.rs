//! Uploads in a bucket, continued by any node.
//!
//! A session's bytes are, in order: the parts of a multipart upload at
//! `_uploads/<id>/data` (each at least the configured `chunksize`, which is
//! at least S3's 5 MiB), then pieces, small objects at
//! `_uploads/<id>/pieces/<offset>` holding what arrived after the last part
//! (a PATCH that ends before a part is full). Its `state` object records
//! these and the SHA-256 state after the last byte, so the node that takes
//! the next request (any node) continues where the last one stopped, and a
//! node that dies loses nothing that was acknowledged.
//!
//! Order of writes: a part or piece is stored before the state names it, so
//! the state never names what is missing; what a crash leaves unnamed is
//! overwritten (a part number) or removed with the session.
//!
//! A commit completes the multipart upload, or puts a small blob whole, and
//! copies it to its place under `blobs/` inside the object store: the digest
//! is known only at the end, and a multipart upload's key is fixed at its
//! start.

use std::path::PathBuf;
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use object_store::PutPayload;
use serde::{Deserialize, Serialize};

use super::{blocking, ByteSource, Session, Store};
use crate::oci::{Algorithm, Digest, Hasher, RepoName};
use crate::storage::backend::s3::S3;
use crate::storage::backend::{Backend, Objects};
use crate::storage::error::StorageError;
use crate::storage::in_use;
use crate::storage::layout::{Layout, UploadId};

/// Where a session's bytes are; stored as JSON in `_uploads/<id>/state`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(super) struct State {
    /// Bytes received: the parts, then the pieces.
    size: u64,
    /// SHA-256 state after `size` bytes (base64 of sha2's serialized state).
    hash: String,
    /// The multipart upload holding the parts, once there is one.
    multipart: Option<String>,
    /// Part ids (ETags) in order, and their sizes.
    parts: Vec<Part>,
    /// Sizes of the pieces after the parts, in order; each is stored at
    /// `pieces/<its offset>`.
    pieces: Vec<u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Part {
    id: String,
    size: u64,
}

impl State {
    fn parts_size(&self) -> u64 {
        self.parts.iter().map(|p| p.size).sum()
    }

    fn pieces_size(&self) -> u64 {
        self.pieces.iter().sum()
    }
}

fn s3(store: &Store) -> &S3 {
    match &store.backend {
        Backend::S3(s3) => s3,
        Backend::Filesystem(_) => unreachable!("object uploads only run on s3"),
    }
}

fn state_key(layout: &Layout, repo: &RepoName, id: &UploadId) -> PathBuf {
    layout.upload_dir(repo, id).join("state")
}

fn piece_key(layout: &Layout, repo: &RepoName, id: &UploadId, offset: u64) -> PathBuf {
    layout
        .upload_dir(repo, id)
        .join("pieces")
        .join(format!("{offset:020}"))
}

/// The session's state in the bucket: `None` for a session that exists but
/// holds no bytes yet; `UploadUnknown` for none at all.
pub(super) fn read_state(
    store: &Store,
    repo: &RepoName,
    id: &UploadId,
) -> Result<Option<State>, StorageError> {
    match state_in(store.backend.objects(), &store.layout, repo, id)? {
        Some(state) => Ok(Some(state)),
        None if store
            .backend
            .exists(&store.layout.upload_started_at(repo, id))? =>
        {
            Ok(None)
        }
        None => Err(StorageError::UploadUnknown),
    }
}

/// The state object, if there is one.
pub(super) fn state_in(
    objects: &dyn Objects,
    layout: &Layout,
    repo: &RepoName,
    id: &UploadId,
) -> Result<Option<State>, StorageError> {
    let key = state_key(layout, repo, id);
    match objects.read(&key)? {
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StorageError::invalid(&key, format!("upload state: {e}"))),
        None => Ok(None),
    }
}

/// Read the state anew (another node may have added to the session).
pub(super) async fn load(
    store: &Arc<Store>,
    session: &mut Session,
    id: &UploadId,
) -> Result<(), StorageError> {
    let (st, repo, id2) = (store.clone(), session.repo.clone(), id.clone());
    let state = blocking(move || read_state(&st, &repo, &id2)).await?;
    let state = state.unwrap_or_default();
    let hasher = if state.hash.is_empty() {
        Algorithm::Sha256.hasher()
    } else {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&state.hash)
            .ok()
            .and_then(|b| Hasher::resume(Algorithm::Sha256, &b));
        match bytes {
            Some(h) => h,
            None => {
                let key = state_key(&store.layout, &session.repo, id);
                return Err(StorageError::invalid(
                    &key,
                    "upload state: bad hash state".into(),
                ));
            }
        }
    };
    session.size = state.size;
    session.hasher = Some(hasher);
    session.object = Some(state);
    Ok(())
}

/// Stream `body` into parts (each at least `chunksize`), keeping what is
/// left at the end as a piece unless this is the last chunk (`last`), whose
/// rest the commit sends as the final part.
pub(super) async fn receive(
    store: &Arc<Store>,
    session: &mut Session,
    id: &UploadId,
    body: &mut impl ByteSource,
    last: bool,
) -> Result<(), StorageError> {
    let s3 = s3(store);
    let mut pending = Pending::default();
    let mut client_error = None;
    loop {
        match body.next_chunk().await {
            Some(Ok(frame)) => {
                let hasher = session.hasher.as_mut().expect("loaded");
                hasher.update(&frame);
                pending.push(frame);
                let state = session.object.as_ref().expect("loaded");
                if state.pieces_size() + pending.len >= s3.chunk_size as u64 {
                    flush_part(store, session, id, &mut pending).await?;
                }
            }
            Some(Err(e)) => {
                client_error = Some(e);
                break;
            }
            None => break,
        }
    }
    if client_error.is_some() || !last {
        // Acknowledged bytes must outlive this node: keep the rest as a piece.
        save_piece(store, session, id, &mut pending).await?;
    } else {
        session.pending = pending.take();
    }
    match client_error {
        Some(e) => Err(StorageError::ClientGone(e)),
        None => Ok(()),
    }
}

/// Bytes received in this request and not yet stored: the body's frames
/// as they came, handed to the object store without a copy.
#[derive(Default)]
struct Pending {
    frames: Vec<Bytes>,
    len: u64,
}

impl Pending {
    fn push(&mut self, frame: Bytes) {
        self.len += frame.len() as u64;
        self.frames.push(frame);
    }

    fn take(&mut self) -> Vec<Bytes> {
        self.len = 0;
        std::mem::take(&mut self.frames)
    }
}

/// Send the pieces and the pending bytes as the next part, then record it.
async fn flush_part(
    store: &Arc<Store>,
    session: &mut Session,
    id: &UploadId,
    pending: &mut Pending,
) -> Result<(), StorageError> {
    let s3 = s3(store);
    let repo = session.repo.clone();
    let data_key = store.layout.upload_data(&repo, id);
    let mut state = session.object.take().expect("loaded");
    let mut payload = read_pieces(store, &repo, id, &state).await?;
    let fresh_len = pending.len;
    payload.extend(pending.take());
    let size: u64 = payload.iter().map(|b| b.len() as u64).sum();
    let upload = match &state.multipart {
        Some(u) => u.clone(),
        None => s3.create_multipart(&data_key).await?,
    };
    let part = s3
        .put_part(
            &data_key,
            &upload,
            state.parts.len(),
            PutPayload::from_iter(payload),
        )
        .await?;
    state.multipart = Some(upload);
    state.parts.push(Part { id: part, size });
    let old_pieces = std::mem::take(&mut state.pieces);
    state.size += fresh_len;
    state.hash = hash_state(session.hasher.as_ref().expect("loaded"));
    save_state(store, &repo, id, &state).await?;
    session.size = state.size;
    // The pieces are in the part now, and the state no longer names them:
    // removing them is tidying (the session's removal takes any left).
    let (st, repo2, id2) = (store.clone(), repo.clone(), id.clone());
    let offsets = piece_offsets(&state, &old_pieces);
    session.object = Some(state);
    let tidied = blocking(move || {
        for offset in offsets {
            st.backend
                .objects()
                .delete(&piece_key(&st.layout, &repo2, &id2, offset))?;
        }
        Ok(())
    })
    .await;
    if let Err(e) = tidied {
        tracing::debug!(error = %e, "pieces left for the session's removal");
    }
    Ok(())
}

/// The offsets of `pieces`, which followed the parts before the newest.
fn piece_offsets(state: &State, pieces: &[u64]) -> Vec<u64> {
    let newest = state.parts.last().map(|p| p.size).unwrap_or(0);
    let mut at = state.parts_size() - newest;
    pieces
        .iter()
        .map(|n| {
            let o = at;
            at += n;
            o
        })
        .collect()
}

/// Store the pending bytes as a piece and record it.
async fn save_piece(
    store: &Arc<Store>,
    session: &mut Session,
    id: &UploadId,
    pending: &mut Pending,
) -> Result<(), StorageError> {
    if pending.len == 0 {
        return Ok(());
    }
    let s3 = s3(store);
    let repo = session.repo.clone();
    let mut state = session.object.take().expect("loaded");
    let len = pending.len;
    let offset = state.size;
    s3.put(
        &piece_key(&store.layout, &repo, id, offset),
        PutPayload::from_iter(pending.take()),
    )
    .await?;
    state.pieces.push(len);
    state.size += len;
    state.hash = hash_state(session.hasher.as_ref().expect("loaded"));
    save_state(store, &repo, id, &state).await?;
    session.size = state.size;
    session.object = Some(state);
    Ok(())
}

/// The stored pieces, in order.
async fn read_pieces(
    store: &Store,
    repo: &RepoName,
    id: &UploadId,
    state: &State,
) -> Result<Vec<Bytes>, StorageError> {
    let s3 = s3(store);
    let mut out = Vec::with_capacity(state.pieces.len());
    let mut at = state.parts_size();
    for size in &state.pieces {
        let key = piece_key(&store.layout, repo, id, at);
        match s3.get(&key).await? {
            Some(b) if b.len() as u64 == *size => out.push(b),
            _ => {
                return Err(StorageError::invalid(
                    &key,
                    "upload piece missing or short".into(),
                ))
            }
        }
        at += size;
    }
    Ok(out)
}

async fn save_state(
    store: &Store,
    repo: &RepoName,
    id: &UploadId,
    state: &State,
) -> Result<(), StorageError> {
    let json = serde_json::to_vec(state).expect("state serializes");
    s3(store)
        .put(&state_key(&store.layout, repo, id), PutPayload::from(json))
        .await
}

fn hash_state(h: &Hasher) -> String {
    base64::engine::general_purpose::STANDARD.encode(h.save().expect("sha256 state saves"))
}

/// Check the digest, then put the blob in place: the parts completed (or a
/// small blob put whole), and copied to `blobs/` unless it is there.
pub(super) async fn commit(
    store: &Arc<Store>,
    session: &mut Session,
    id: &UploadId,
    digest: &Digest,
) -> Result<u64, StorageError> {
    let s3 = s3(store);
    let repo = session.repo.clone();
    let state = session.object.clone().expect("loaded");
    let last = std::mem::take(&mut session.pending);
    let size = state.size + last.iter().map(|b| b.len() as u64).sum::<u64>();
    let data_key = store.layout.upload_data(&repo, id);
    let target = store.layout.blob_data(digest);

    let hasher = session.hasher.clone().expect("loaded");
    let sha256 = hasher.finish();
    let actual = if digest.algorithm() == Algorithm::Sha256 {
        Some(sha256)
    } else {
        None // known only once the bytes are assembled, below
    };
    if let Some(actual) = &actual {
        if actual != digest {
            return Err(StorageError::DigestMismatch {
                expected: digest.clone(),
                actual: actual.clone(),
            });
        }
    }

    // Claimed, not just looked at: a blob there already is kept by a
    // collection running now, and one it deleted is stored again below.
    let present = in_use::claim_if_present(s3, &store.layout, digest).await?;
    if present && actual.is_some() {
        // The blob is there already: what this session uploaded is not needed.
        if let Some(upload) = &state.multipart {
            s3.abort_multipart(&data_key, upload).await?;
        }
    } else {
        let mut tail = read_pieces(store, &repo, id, &state).await?;
        tail.extend(last);
        match &state.multipart {
            // Small: the bytes are all here; one PUT, straight into place
            // (after the check below for other algorithms).
            None if actual.is_some() => {
                s3.put(&target, PutPayload::from_iter(tail)).await?;
            }
            _ => {
                // A PUT retried after the parts were completed finds the
                // assembled object and goes on from there.
                let (st, k) = (store.clone(), data_key.clone());
                let assembled = blocking(move || st.backend.objects().stat(&k)).await?;
                if assembled.map(|m| m.size) != Some(size) {
                    let upload = match &state.multipart {
                        Some(u) => u.clone(),
                        None => s3.create_multipart(&data_key).await?,
                    };
                    let mut parts: Vec<String> = state.parts.iter().map(|p| p.id.clone()).collect();
                    if tail.iter().any(|b| !b.is_empty()) || parts.is_empty() {
                        let part = s3
                            .put_part(&data_key, &upload, parts.len(), PutPayload::from_iter(tail))
                            .await?;
                        parts.push(part);
                    }
                    s3.complete_multipart(&data_key, &upload, &parts).await?;
                }
                if actual.is_none() {
                    let actual = rehash(store, &data_key, digest.algorithm()).await?;
                    if actual != *digest {
                        return Err(StorageError::DigestMismatch {
                            expected: digest.clone(),
                            actual,
                        });
                    }
                }
                if !present {
                    s3.copy(&data_key, &target).await?;
                }
            }
        }
    }
    let (st, repo2, id2, d) = (store.clone(), repo.clone(), id.clone(), digest.clone());
    blocking(move || st.finish_commit(&repo2, &id2, &d, size)).await
}

/// Hash an assembled object with another algorithm than SHA-256.
async fn rehash(
    store: &Store,
    key: &std::path::Path,
    algorithm: Algorithm,
) -> Result<Digest, StorageError> {
    use futures_util::TryStreamExt;
    let s3 = s3(store);
    let (st, k) = (s3, key.to_path_buf());
    let size = match st.stat(&k)? {
        Some(m) => m.size,
        None => return Err(StorageError::UploadUnknown),
    };
    let mut stream = s3.read_range(key, 0, size).await?;
    let mut h = algorithm.hasher();
    while let Some(b) = stream
        .try_next()
        .await
        .map_err(|e| StorageError::io(key, e))?
    {
        h.update(&b);
    }
    Ok(h.finish())
}

/// Abort the session's multipart upload, if it has one.
pub(super) fn abort(
    s3: &S3,
    layout: &Layout,
    repo: &RepoName,
    id: &UploadId,
    state: Option<&State>,
) -> Result<(), StorageError> {
    match state.and_then(|s| s.multipart.as_ref()) {
        Some(upload) => s3.wait(s3.abort_multipart(&layout.upload_data(repo, id), upload)),
        None => Ok(()),
    }
}
