//! Faults: clients that vanish mid-upload, a crash mid-write, a full or
//! read-only disk. Nothing partial may appear at a final path, and what
//! was committed stays served.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::*;

/// Send the headers and the first `send` bytes of a body that claims
/// `total` bytes, then hang up.
fn send_partial(addr: &str, method: &str, path: &str, total: usize, send: &[u8]) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/octet-stream\r\nContent-Length: {total}\r\n\r\n"
    )
    .unwrap();
    s.write_all(send).unwrap();
    s.flush().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    drop(s);
}

fn path_of(location: &str) -> String {
    let i = location.find("/v2/").unwrap();
    location[i..].to_string()
}

fn wait_for_range(c: &Client, loc: &str, want: &str) {
    for _ in 0..50 {
        if c.get(loc).header("range") == Some(want) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("upload never reached range {want}: {:?}", c.get(loc));
}

#[test]
fn client_disconnect_mid_patch_keeps_a_resumable_session() {
    let s = Server::start();
    let c = Client::new(&s);
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 199) as u8).collect();
    let d = sha256(&data);
    let r = c.call("POST", "/v2/r/blobs/uploads/", &[], Some(b""));
    let loc = path_of(r.header("location").unwrap());
    send_partial(&s.addr, "PATCH", &loc, data.len(), &data[..300_000]);
    wait_for_range(&c, &loc, "0-299999");
    assert!(!s.blob_path(&d).exists());
    c.call(
        "PATCH",
        &loc,
        &[("content-range", "300000-999999")],
        Some(&data[300_000..]),
    )
    .expect(202, None);
    c.call("PUT", &format!("{loc}?digest={d}"), &[], None)
        .expect(201, None);
    assert_eq!(c.get(&format!("/v2/r/blobs/{d}")).body, data);
}

#[test]
fn client_disconnect_mid_monolithic_push_commits_nothing() {
    let s = Server::start();
    let c = Client::new(&s);
    let data = vec![7u8; 2_000_000];
    let d = sha256(&data);
    send_partial(
        &s.addr,
        "POST",
        &format!("/v2/r/blobs/uploads/?digest={d}"),
        data.len(),
        &data[..500_000],
    );
    // The server notices the hang-up and drops the session.
    for _ in 0..50 {
        if s.files_containing("/_uploads/").is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(s.files_containing("/_uploads/").is_empty());
    assert!(!s.blob_path(&d).exists());
    c.get(&format!("/v2/r/blobs/{d}"))
        .expect(404, Some("BLOB_UNKNOWN"));
}

#[test]
fn kill_9_mid_push_leaves_no_partial_blob() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let mut s = Server::start_at(&root, Opts::default());
    let c = Client::new(&s);
    let (manifest, md) = c.push_image("r", "kept", "committed before the crash");
    let big = vec![3u8; 64 << 20];
    let d = sha256(&big);
    // A monolithic push, cut by SIGKILL while the body is streaming.
    let addr = s.addr.clone();
    let path = format!("/v2/r/blobs/uploads/?digest={d}");
    let writer = std::thread::spawn(move || {
        let mut sock = TcpStream::connect(&addr).unwrap();
        write!(
            sock,
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n",
            big.len()
        )
        .unwrap();
        for chunk in big.chunks(1 << 20) {
            if sock.write_all(chunk).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    std::thread::sleep(Duration::from_millis(150));
    s.kill9();
    writer.join().unwrap();
    drop(s);
    assert!(!Server::start_at(&root, Opts::default())
        .blob_path(&d)
        .exists());

    let s = Server::start_at(&root, Opts::default());
    let c = Client::new(&s);
    assert!(!s.blob_path(&d).exists(), "no partial blob at a final path");
    c.get(&format!("/v2/r/blobs/{d}"))
        .expect(404, Some("BLOB_UNKNOWN"));
    let r = c.get("/v2/r/manifests/kept");
    r.expect(200, None);
    assert_eq!(r.body, manifest);
    assert_eq!(r.header("docker-content-digest"), Some(md.as_str()));
    // Every blob at a final path is whole: its content hashes to its name.
    for data in s.files_containing("/blobs/sha256/") {
        let hex = data
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert_eq!(
            sha256(&std::fs::read(&data).unwrap()),
            format!("sha256:{hex}")
        );
    }
}

/// A tmpfs mounted for one test; unmounted on drop. Needs root, as CI has.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(
            ok,
            "this test mounts a small tmpfs to fill it: run the tests as root"
        );
        Tmpfs(dir.to_path_buf())
    }

    fn remount_ro(&self) {
        let ok = Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(&self.0)
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn full_disk_then_read_only_disk() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    let fs = Tmpfs::mount(&mnt, "16m");
    let root = mnt.join("data");
    let s = Server::start_at(&root, Opts::default());
    let c = Client::new(&s);
    let (manifest, _) = c.push_image("r", "before", "pushed while there was room");
    let small = c.push_blob("r", b"small and safe");

    // Leave ~256 KiB free, then push 2 MiB.
    let filler = mnt.join("filler");
    {
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 << 10];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }
    let used = std::fs::metadata(&filler).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&filler)
        .unwrap()
        .set_len(used - (256 << 10))
        .unwrap();
    let data = vec![9u8; 2 << 20];
    let d = sha256(&data);
    let r = c.call(
        "POST",
        &format!("/v2/r/blobs/uploads/?digest={d}"),
        &[],
        Some(&data),
    );
    assert_eq!(r.status, 507, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.json()["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("no space"));
    assert!(!s.blob_path(&d).exists());
    assert!(
        s.files_containing("/_uploads/").is_empty(),
        "temp data removed"
    );
    assert!(s.files_containing("/_tmp/").is_empty());
    // Reads go on.
    assert_eq!(c.get("/v2/r/manifests/before").body, manifest);
    c.get(&format!("/v2/r/blobs/{small}")).expect(200, None);
    // Several pushes at once into the full disk, beside reads: each is
    // refused with 507 (never a 500), and the reads are served.
    let pushers: Vec<_> = (0..4u8)
        .map(|i| {
            let addr = s.addr.clone();
            std::thread::spawn(move || {
                let c = Client::for_addr(&addr);
                let data = vec![i; 1 << 20];
                let path = format!("/v2/r/blobs/uploads/?digest={}", sha256(&data));
                c.call("POST", &path, &[], Some(&data)).status
            })
        })
        .collect();
    for _ in 0..20 {
        assert_eq!(c.get("/v2/r/manifests/before").body, manifest);
    }
    let statuses: Vec<u16> = pushers.into_iter().map(|p| p.join().unwrap()).collect();
    assert_eq!(statuses, [507; 4]);
    assert!(s.files_containing("/_uploads/").is_empty());
    // Room again: pushes work again, by themselves, at once.
    std::fs::remove_file(&filler).unwrap();
    c.push_blob("r", &data);
    for i in 0..4u8 {
        c.push_blob("r", &vec![i; 1 << 20]);
    }

    fs.remount_ro();
    let r = c.call("POST", "/v2/r/blobs/uploads/", &[], Some(b""));
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.json()["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("read-only"));
    assert_eq!(c.get("/v2/r/manifests/before").body, manifest);
    let mut body = vec![];
    let mut sock = TcpStream::connect(&s.addr).unwrap();
    write!(
        sock,
        "GET /v2/r/blobs/{d} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    sock.read_to_end(&mut body).unwrap();
    assert!(body.starts_with(b"HTTP/1.1 200"));
    drop(s);
}

/// Read until the server closes the connection; return what it sent and
/// how long it took.
fn read_until_closed(sock: &mut TcpStream, limit: Duration) -> (String, Duration) {
    let start = std::time::Instant::now();
    sock.set_read_timeout(Some(limit)).unwrap();
    let mut out = Vec::new();
    let _ = sock.read_to_end(&mut out);
    (String::from_utf8_lossy(&out).into_owned(), start.elapsed())
}

#[test]
fn slow_and_oversized_headers_are_cut_off() {
    let s = Server::start_with(Opts {
        extra: "  headertimeout: 1s\n  maxheaderbytes: 16KiB\n".into(),
        ..Opts::default()
    });
    // A header that never finishes.
    let mut sock = TcpStream::connect(&s.addr).unwrap();
    sock.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Slow: a")
        .unwrap();
    let (_, took) = read_until_closed(&mut sock, Duration::from_secs(10));
    assert!(
        took < Duration::from_secs(5),
        "connection held for {took:?}"
    );
    // An idle keep-alive connection is closed too.
    let mut sock = TcpStream::connect(&s.addr).unwrap();
    sock.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let (reply, took) = read_until_closed(&mut sock, Duration::from_secs(10));
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(
        took < Duration::from_secs(5),
        "idle connection held for {took:?}"
    );
    // A head larger than the limit.
    let mut sock = TcpStream::connect(&s.addr).unwrap();
    let big = "a".repeat(40 << 10);
    let _ = write!(sock, "GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n");
    let (reply, _) = read_until_closed(&mut sock, Duration::from_secs(10));
    assert!(reply.starts_with("HTTP/1.1 431"), "{reply}");
    // The server is fine.
    Client::new(&s).get("/v2/").expect(200, None);
}

#[test]
fn connections_beyond_the_limit_wait_their_turn() {
    let s = Server::start_with(Opts {
        extra: "  maxconnections: 2\n".into(),
        ..Opts::default()
    });
    let hold = |_| {
        let mut sock = TcpStream::connect(&s.addr).unwrap();
        sock.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 12];
        sock.read_exact(&mut buf).unwrap();
        sock
    };
    let held: Vec<TcpStream> = (0..2).map(hold).collect();
    // A third client is not served while two connections are open...
    let mut third = TcpStream::connect(&s.addr).unwrap();
    third
        .write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    third
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 12];
    assert!(
        third.read_exact(&mut buf).is_err(),
        "served beyond the limit"
    );
    // ...and is served as soon as one closes.
    drop(held);
    third
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    third.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"HTTP/1.1 200");
}
