//! The blocking side of an upload: appends 1 MiB buffers to the session's
//! file, through the page cache or, in `WriteMode::Direct`, around it.
//!
//! The trade, measured with scripts/bench-curl.sh (1 GiB, curl, one
//! client) and `registry-bench compare` (8 clients): buffered writes ran
//! 0.4-1.0 GB/s, because every byte needs a fresh page-cache page, which is
//! slow to get on these machines (perf: two thirds of the server's time in
//! the kernel's copy into new page-cache pages); direct writes ran 1.3-1.4
//! GB/s and took 64 MiB pushes from 0.95x Distribution to 4.2x. The cost is
//! that a blob just pushed is not in the page cache, so its first pull
//! reads the disk (0.6-0.9 GB/s here, against 2.5-3.5 GB/s from cache);
//! later pulls are served from the cache that first read filled. Direct is
//! the default; `storage.filesystem.directwrites: false` keeps what is
//! pushed cached for its first pull.
//!
//! Direct writes need the file offset, the length and the memory aligned to
//! the block size, so the pieces that are not (the head up to the first
//! aligned offset after an odd-sized chunk, and the tail) go through an
//! ordinary buffered descriptor on the same file; the kernel keeps the two
//! coherent. Where O_DIRECT is refused (tmpfs on older kernels, some
//! network file systems) every write is buffered.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

/// How upload data reaches the disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WriteMode {
    /// Through the page cache: what was pushed is cached for its pulls.
    Buffered,
    /// O_DIRECT for whole aligned blocks: faster pushes, colder first pulls.
    #[default]
    Direct,
}

/// Alignment for direct I/O: offsets, lengths and buffer addresses.
pub const ALIGN: usize = 4096;

/// A fixed-capacity byte buffer whose first byte is `ALIGN`-aligned.
pub struct AlignedBuf {
    mem: Vec<u8>,
    start: usize,
    len: usize,
    cap: usize,
}

impl AlignedBuf {
    pub fn new(cap: usize) -> AlignedBuf {
        let mem = vec![0u8; cap + ALIGN];
        let start = mem.as_ptr().align_offset(ALIGN);
        AlignedBuf {
            mem,
            start,
            len: 0,
            cap,
        }
    }

    /// Copy as much of `data` as fits within `limit` bytes in all; return how much.
    pub fn fill(&mut self, data: &[u8], limit: usize) -> usize {
        let room = limit.min(self.cap).saturating_sub(self.len);
        let n = room.min(data.len());
        let at = self.start + self.len;
        self.mem[at..at + n].copy_from_slice(&data[..n]);
        self.len += n;
        n
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.mem[self.start..self.start + self.len]
    }

    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// The whole capacity, to read into; say how much was read with
    /// [`AlignedBuf::set_len`].
    pub fn capacity_mut(&mut self) -> &mut [u8] {
        &mut self.mem[self.start..self.start + self.cap]
    }

    pub fn set_len(&mut self, len: usize) {
        self.len = len.min(self.cap);
    }
}

/// Appends to a file at its end, directly where it can.
pub struct BlockWriter {
    buffered: File,
    direct: Option<File>,
    offset: u64,
    /// For a misaligned middle part (after an odd head): copied here first.
    bounce: Option<AlignedBuf>,
}

impl BlockWriter {
    pub fn open(path: &Path, mode: WriteMode) -> io::Result<BlockWriter> {
        let buffered = OpenOptions::new().write(true).open(path)?;
        let offset = buffered.metadata()?.len();
        let direct = match mode {
            WriteMode::Buffered => None,
            WriteMode::Direct => OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_DIRECT)
                .open(path)
                .ok(),
        };
        Ok(BlockWriter {
            buffered,
            direct,
            offset,
            bounce: None,
        })
    }

    /// The file offset the next write goes to.
    #[cfg(test)]
    pub fn offset(&self) -> u64 {
        self.offset
    }

    pub fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        // Head: buffered, up to the next aligned offset.
        let misalign = (self.offset % ALIGN as u64) as usize;
        if misalign != 0 {
            let n = (ALIGN - misalign).min(data.len());
            self.buffered.write_all_at(&data[..n], self.offset)?;
            self.offset += n as u64;
            data = &data[n..];
        }
        // Middle: whole blocks, direct.
        let blocks = data.len() / ALIGN * ALIGN;
        if blocks > 0 && self.direct.is_some() {
            let (middle, rest) = data.split_at(blocks);
            self.write_direct(middle)?;
            data = rest;
        }
        // Tail (or everything, without O_DIRECT): buffered.
        if !data.is_empty() {
            self.buffered.write_all_at(data, self.offset)?;
            self.offset += data.len() as u64;
        }
        Ok(())
    }

    fn write_direct(&mut self, middle: &[u8]) -> io::Result<()> {
        let aligned = middle.as_ptr().align_offset(ALIGN) == 0;
        let src: &[u8] = if aligned {
            middle
        } else {
            let bounce = self
                .bounce
                .get_or_insert_with(|| AlignedBuf::new(middle.len().max(1 << 20)));
            if bounce.cap < middle.len() {
                *bounce = AlignedBuf::new(middle.len());
            }
            bounce.clear();
            bounce.fill(middle, usize::MAX);
            self.bounce.as_ref().expect("just set").as_slice()
        };
        let direct = self.direct.as_ref().expect("checked by caller");
        match direct.write_all_at(src, self.offset) {
            Ok(()) => {
                self.offset += src.len() as u64;
                Ok(())
            }
            // Accepted at open but refused on write: go buffered for good.
            // A refused direct write writes nothing, so the offset is intact.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                self.direct = None;
                self.buffered.write_all_at(middle, self.offset)?;
                self.offset += middle.len() as u64;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(feature = "io-uring")]
impl BlockWriter {
    /// Whether the next write starts on a block boundary of an O_DIRECT
    /// descriptor, which is what io_uring is used for.
    pub fn direct_ready(&self) -> bool {
        self.direct.is_some() && self.offset % ALIGN as u64 == 0
    }

    /// `write` with the whole blocks sent as one io_uring write (on the
    /// io_uring thread); the tail, if any, is written as usual.
    pub async fn write_uring(&mut self, buf: AlignedBuf) -> (AlignedBuf, io::Result<()>) {
        use tokio_uring::buf::BoundedBuf;
        let blocks = buf.len / ALIGN * ALIGN;
        let Some(direct) = self
            .direct
            .as_ref()
            .filter(|_| blocks > 0 && self.direct_ready())
        else {
            let result = self.write(buf.as_slice());
            return (buf, result);
        };
        let file = match direct.try_clone() {
            Ok(f) => tokio_uring::fs::File::from_std(f),
            Err(e) => return (buf, Err(e)),
        };
        let AlignedBuf {
            mem,
            start,
            len,
            cap,
        } = buf;
        let (result, slice) = file
            .write_all_at(mem.slice(start..start + blocks), self.offset)
            .await;
        let _ = file.close().await;
        let buf = AlignedBuf {
            mem: slice.into_inner(),
            start,
            len,
            cap,
        };
        let result = match result {
            Ok(()) => {
                self.offset += blocks as u64;
                Ok(())
            }
            // Refused on write though accepted at open: buffered from now on.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                self.direct = None;
                self.write(&buf.as_slice()[..blocks])
            }
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            return (buf, Err(e));
        }
        let tail = self.write(&buf.as_slice()[blocks..]);
        (buf, tail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_chunks_land_exactly_in_either_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        std::fs::write(&path, b"").unwrap();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        // Chunk sizes that leave every kind of misalignment.
        let sizes = [1usize, 4095, 4096, 1 << 20, 12_345, 700_000, 1_000_003];
        let mut at = 0;
        let mut i = 0;
        while at < data.len() {
            let n = sizes[i % sizes.len()].min(data.len() - at);
            // A new writer per chunk, as each request opens one.
            let mode = if i % 3 == 0 {
                WriteMode::Buffered
            } else {
                WriteMode::Direct
            };
            let mut w = BlockWriter::open(&path, mode).unwrap();
            assert_eq!(w.offset(), at as u64);
            let mut buf = AlignedBuf::new(n);
            buf.fill(&data[at..at + n], n);
            w.write(buf.as_slice()).unwrap();
            at += n;
            i += 1;
        }
        assert_eq!(std::fs::read(&path).unwrap(), data);
    }

    #[test]
    fn aligned_buf_fills_to_limit() {
        let mut b = AlignedBuf::new(10);
        assert_eq!(b.as_slice().as_ptr().align_offset(ALIGN), 0);
        assert_eq!(b.fill(b"abcdef", 4), 4);
        assert_eq!(b.fill(b"ghijkl", 100), 6);
        assert_eq!(b.as_slice(), b"abcdghijkl");
        assert_eq!(b.fill(b"x", 100), 0);
    }
}
