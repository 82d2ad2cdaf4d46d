//! Reading a blob's file for a download: through the page cache where its
//! pages are there, around it (O_DIRECT) where they are not.
//!
//! Uploads are written around the page cache (`writer`), so the first pull
//! of a blob just pushed finds none of it cached. Reading it through the
//! cache would fill the cache as it goes, and on these machines fresh
//! page-cache pages are slow to get: 0.4 GB/s for a cold buffered read of a
//! blob just pushed, against 1.7-1.9 GB/s read directly into a buffer of
//! our own (scripts/bench-curl.sh, BENCHMARKS.md). So a piece that is not
//! cached is read directly (1.4-1.5 GB/s for a pull here, against 0.4), and
//! a second after the download is over the file is brought into the cache,
//! one file at a time, on a thread of its own: later pulls then come from
//! the cache (and may be sent by the kernel), as on a server whose pushes
//! went through the cache. On an ordinary server, where page-cache pages
//! come cheap, the cold read costs nothing more than the disk's read.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use bytes::Bytes;

use super::writer::{AlignedBuf, ALIGN};

/// A blob's file opened for a download.
pub struct BlobReader {
    file: File,
    path: PathBuf,
    /// The same file opened with O_DIRECT, once a piece needs it (`None`
    /// where the file system refuses it).
    direct: OnceLock<Option<File>>,
    /// Some piece was read around the cache.
    read_direct: AtomicBool,
}

impl BlobReader {
    pub fn new(file: File, path: PathBuf) -> BlobReader {
        BlobReader {
            file,
            path,
            direct: OnceLock::new(),
            read_direct: AtomicBool::new(false),
        }
    }

    /// Up to `want` bytes (at most `PIECE`) from `offset`: through the
    /// page cache, or around it when `cold`. Blocking. An error at the end
    /// of the file: the blob is shorter than announced.
    pub fn read(&self, offset: u64, want: usize, cold: bool) -> io::Result<Bytes> {
        if cold {
            if let Some(direct) = self.direct() {
                match read_direct(direct, offset, want) {
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
                    read => {
                        if !self.read_direct.swap(true, Ordering::Relaxed) {
                            READING_AROUND.fetch_add(1, Ordering::Relaxed);
                        }
                        return read;
                    }
                }
            }
        }
        let mut buf = spare_buf(want);
        match self.file.read_at(&mut buf.capacity_mut()[..want], offset)? {
            0 => Err(ended_early()),
            n => {
                buf.set_len(n);
                Ok(Piece::bytes(buf, 0..n))
            }
        }
    }

    /// Whether the pages of `len` bytes from `offset` are in the page cache,
    /// as far as a few one-byte reads that may not wait for the disk tell
    /// (one per `PROBE_STEP` and the last byte). Where the kernel cannot
    /// say, the answer is yes: a read through the cache, or `sendfile`,
    /// then waits for the disk at worst.
    pub fn cached(&self, offset: u64, len: u64) -> bool {
        const PROBE_STEP: u64 = 1 << 20;
        if len == 0 {
            return true;
        }
        let last = offset + len - 1;
        let probes = (offset..=last).step_by(PROBE_STEP as usize).chain([last]);
        let mut byte = [0u8; 1];
        for at in probes {
            let read = rustix::io::preadv2(
                &self.file,
                &mut [io::IoSliceMut::new(&mut byte)],
                at,
                rustix::io::ReadWriteFlags::NOWAIT,
            );
            match read {
                Ok(1) => continue,
                // Shorter than announced: let the read report it.
                Ok(_) => return false,
                Err(rustix::io::Errno::AGAIN) => return false,
                Err(_) => return true,
            }
        }
        true
    }

    fn direct(&self) -> Option<&File> {
        self.direct
            .get_or_init(|| {
                OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_DIRECT)
                    .open(&self.path)
                    .ok()
            })
            .as_ref()
    }
}

impl Drop for BlobReader {
    /// A download that read around the cache leaves the file to be
    /// brought into it.
    fn drop(&mut self) {
        if self.read_direct.load(Ordering::Relaxed) {
            READING_AROUND.fetch_sub(1, Ordering::Relaxed);
            if let Ok(file) = self.file.try_clone() {
                cache_behind(file);
            }
        }
    }
}

impl AsFd for BlobReader {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

fn ended_early() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "blob ended early")
}

/// Read around the page cache: whole aligned blocks into an aligned buffer,
/// of which the bytes asked for are handed on without a copy.
fn read_direct(file: &File, offset: u64, want: usize) -> io::Result<Bytes> {
    let start = offset / ALIGN as u64 * ALIGN as u64;
    let skip = (offset - start) as usize;
    let len = (skip + want).div_ceil(ALIGN) * ALIGN;
    let mut buf = spare_buf(len);
    // Short only at the end of the file.
    let n = file.read_at(&mut buf.capacity_mut()[..len], start)?;
    if n <= skip {
        return Err(ended_early());
    }
    buf.set_len(n);
    Ok(Piece::bytes(buf, skip..(skip + want).min(n)))
}

/// The most a download reads at once.
pub const PIECE: usize = 1 << 20;
/// A read buffer: a piece at any offset, rounded out to whole blocks.
const PIECE_BUF: usize = PIECE + 2 * ALIGN;
/// Read buffers kept for the next read once their bytes are sent, at
/// most this many: zeroing a fresh buffer for every read was an eighth of
/// a cold pull's CPU, and memory handed back to the host is slow to get
/// again on these machines (DESIGN.md).
const SPARE_MAX: usize = 16;
static SPARE: Mutex<Vec<AlignedBuf>> = Mutex::new(Vec::new());

/// A read buffer of at least `len` bytes: a spare one if there is one.
fn spare_buf(len: usize) -> AlignedBuf {
    if len > PIECE_BUF {
        return AlignedBuf::new(len);
    }
    let spare = SPARE.lock().unwrap_or_else(|e| e.into_inner()).pop();
    spare.unwrap_or_else(|| AlignedBuf::new(PIECE_BUF))
}

/// The bytes of a read, handed on as `Bytes` without a copy; when the last
/// of them is sent, the buffer goes back to the spares.
struct Piece {
    buf: Option<AlignedBuf>,
    range: std::ops::Range<usize>,
}

impl Piece {
    fn bytes(buf: AlignedBuf, range: std::ops::Range<usize>) -> Bytes {
        Bytes::from_owner(Piece {
            buf: Some(buf),
            range,
        })
    }
}

impl AsRef<[u8]> for Piece {
    fn as_ref(&self) -> &[u8] {
        match &self.buf {
            Some(buf) => &buf.as_slice()[self.range.clone()],
            None => &[],
        }
    }
}

impl Drop for Piece {
    fn drop(&mut self) {
        let Some(mut buf) = self.buf.take() else {
            return;
        };
        if buf.capacity() == PIECE_BUF {
            let mut spare = SPARE.lock().unwrap_or_else(|e| e.into_inner());
            if spare.len() < SPARE_MAX {
                buf.clear();
                spare.push(buf);
            }
        }
    }
}

/// How long after a download that read around the cache its file starts
/// to be brought into it.
const CACHE_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// Downloads that have read around the cache and are still going.
static READING_AROUND: AtomicUsize = AtomicUsize::new(0);
const YIELD_STEP: std::time::Duration = std::time::Duration::from_millis(50);
const YIELD_AT_MOST: std::time::Duration = std::time::Duration::from_secs(5);

/// One file at a time is brought into the cache; another that finishes
/// meanwhile is left for its next pull.
static CACHING: AtomicBool = AtomicBool::new(false);

/// Ask the kernel to read `file` into the page cache, a window at a time,
/// on a thread of the blocking pool; what is already cached costs nothing.
fn cache_behind(file: File) {
    if CACHING.swap(true, Ordering::AcqRel) {
        return;
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        CACHING.store(false, Ordering::Release);
        return;
    };
    runtime.spawn_blocking(move || {
        // Not at once: a pull that follows straight away (the next job of
        // a CI pipeline) goes faster read around the cache than beside the
        // filling of it, which is slow here (see above).
        std::thread::sleep(CACHE_AFTER);
        const WINDOW: u64 = 8 << 20;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        let mut at = 0;
        while at < size {
            // Downloads reading around the cache go first: filling it
            // beside them slows them more than it gains (a pull straight
            // after another went at a third of its speed), up to a bound,
            // so that a steady stream of them does not keep files cold.
            let mut waited = std::time::Duration::ZERO;
            while READING_AROUND.load(Ordering::Relaxed) > 0 && waited < YIELD_AT_MOST {
                std::thread::sleep(YIELD_STEP);
                waited += YIELD_STEP;
            }
            // Deleted meanwhile (a collection): nothing will read it.
            if file.metadata().map(|m| m.nlink() == 0).unwrap_or(true) {
                break;
            }
            let len = std::num::NonZeroU64::new(WINDOW.min(size - at));
            if rustix::fs::fadvise(&file, at, len, rustix::fs::Advice::WillNeed).is_err() {
                break;
            }
            at += WINDOW;
        }
        CACHING.store(false, Ordering::Release);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_just_written_is_cached_and_a_short_one_is_not() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        let mut f = File::create(&path).unwrap();
        f.write_all(&vec![7u8; 3 << 20]).unwrap();
        let r = BlobReader::new(File::open(&path).unwrap(), path);
        assert!(r.cached(0, 3 << 20));
        assert!(r.cached(5, 10));
        assert!(!r.cached(0, (3 << 20) + 1));
    }

    #[test]
    fn reads_around_the_cache_give_the_same_bytes_at_any_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let r = BlobReader::new(File::open(&path).unwrap(), path);
        for (offset, want) in [
            (0, 4096),
            (1, 10),
            (4095, 2),
            (1 << 20, 1 << 20),
            (2_999_990, 10),
        ] {
            for cold in [false, true] {
                let got = r.read(offset as u64, want, cold).unwrap();
                assert_eq!(
                    &got[..],
                    &data[offset..offset + want],
                    "{offset}+{want} cold {cold}"
                );
            }
        }
        // Past the end: what is there, then an error.
        assert_eq!(r.read(2_999_995, 100, true).unwrap().len(), 5);
        assert!(r.read(3_000_000, 100, true).is_err());
        assert!(r.read(3_000_000, 100, false).is_err());
    }
}
