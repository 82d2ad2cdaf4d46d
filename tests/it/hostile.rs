//! Hostile traffic: a bounded fuzzer of the tests' own sends the real
//! server requests no client should, over raw TCP so that nothing tidies
//! them first: random and lowercase methods; encoded, doubled and
//! traversing paths; bad digests, names, tags and queries; bodies that lie
//! about their length or break off; oversized, repeated and malformed
//! headers; bad credentials. Afterwards:
//! - no answer was a 5xx (a client's mistake is a 4xx), none hung;
//! - nothing outside the storage root was touched (a sentinel directory
//!   beside it, the config and htpasswd files are as they were);
//! - the server still takes a push and serves it, and `registry verify`
//!   finds the store sound.
//!
//! Bounded: `REQUESTS` requests (a quarter as many with logins), each given
//! `LIMIT` to answer.
//! `FUZZ_SEED` repeats a run.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::support::*;

const REQUESTS: usize = 2500;
const THREADS: usize = 4;
const LIMIT: Duration = Duration::from_secs(15);

fn pick<'a>(rng: &mut StdRng, from: &[&'a str]) -> &'a str {
    from[rng.gen_range(0..from.len())]
}

fn hex(rng: &mut StdRng, n: usize) -> String {
    (0..n)
        .map(|_| char::from(b"0123456789abcdef"[rng.gen_range(0..16)]))
        .collect()
}

fn garbage(rng: &mut StdRng, len: std::ops::Range<usize>) -> String {
    let n = rng.gen_range(len);
    (0..n)
        .map(|_| char::from(rng.gen_range(0x20u8..0x7f)))
        .collect()
}

fn digest(rng: &mut StdRng) -> String {
    match rng.gen_range(0..9) {
        0 => format!("sha256:{}", hex(rng, 64)),
        1 => format!("sha256:{}", hex(rng, 63)),
        2 => format!("sha256:{}", hex(rng, 64).to_uppercase()),
        3 => format!("sha512:{}", hex(rng, 128)),
        4 => format!("md5:{}", hex(rng, 32)),
        5 => "sha256:../../../../etc/passwd".into(),
        6 => format!("sha256%3a{}", hex(rng, 64)),
        7 => String::new(),
        _ => garbage(rng, 1..80),
    }
}

fn name(rng: &mut StdRng) -> String {
    match rng.gen_range(0..12) {
        0..=3 => pick(rng, &["library/alpine", "a", "team/app", "x/y/z"]).into(),
        4 => "../../outside".into(),
        5 => "%2e%2e/%2e%2e/outside".into(),
        6 => "a/../../outside".into(),
        7 => "a//b".into(),
        8 => "A/UPPER".into(),
        9 => "x".repeat(rng.gen_range(200..400)),
        10 => format!("{}%2F{}", "a", "b"),
        _ => garbage(rng, 1..40).replace(' ', "%20"),
    }
}

fn reference(rng: &mut StdRng) -> String {
    match rng.gen_range(0..6) {
        0 => "latest".into(),
        1 => digest(rng),
        2 => "t".repeat(rng.gen_range(100..200)),
        3 => "../../../outside".into(),
        4 => ":tag".into(),
        _ => garbage(rng, 1..30).replace(' ', "%20"),
    }
}

fn path(rng: &mut StdRng) -> String {
    let n = name(rng);
    let mut p = match rng.gen_range(0..14) {
        0 => format!("/v2/{n}/manifests/{}", reference(rng)),
        1 => format!("/v2/{n}/blobs/{}", digest(rng)),
        2 => format!("/v2/{n}/blobs/uploads/"),
        3 => format!(
            "/v2/{n}/blobs/uploads/{}",
            garbage(rng, 36..37).replace(' ', "-")
        ),
        4 => format!("/v2/{n}/tags/list"),
        5 => format!("/v2/{n}/referrers/{}", digest(rng)),
        6 => "/v2/_catalog".into(),
        7 => pick(
            rng,
            &[
                "/",
                "/v2",
                "/v2/",
                "/v1/_ping",
                "/v1/search",
                "/metrics",
                "/readyz",
                "/healthz",
            ],
        )
        .into(),
        8 => "/../../../../etc/passwd".into(),
        9 => "/v2/../../../../etc/passwd".into(),
        10 => format!("http://127.0.0.1/v2/{n}/tags/list"),
        11 => format!("/v2/{}", "a/".repeat(rng.gen_range(1..2000))),
        12 => format!("/repo/{n}/image/{}", reference(rng)),
        _ => format!("/{}", garbage(rng, 0..200).replace(' ', "%20")),
    };
    if rng.gen_bool(0.4) {
        let q = match rng.gen_range(0..8) {
            0 => format!("digest={}", digest(rng)),
            1 => format!(
                "n={}",
                pick(rng, &["-1", "0", "99999999999999999999", "x", ""])
            ),
            2 => format!("last={}", garbage(rng, 20..21).replace(' ', "+")),
            3 => format!("mount={}&from={}", digest(rng), name(rng)),
            4 => format!(
                "q={}&page={}",
                garbage(rng, 10..11).replace(' ', "+"),
                pick(rng, &["0", "-5", "a"])
            ),
            5 => format!("artifactType={}", garbage(rng, 30..31).replace(' ', "%20")),
            6 => "%zz=%".into(),
            _ => "a=b&".repeat(rng.gen_range(1..500)),
        };
        p = format!("{p}?{q}");
    }
    p
}

/// One request as raw bytes.
fn request(rng: &mut StdRng, addr: &str, credentials: &[&str]) -> Vec<u8> {
    let method = match rng.gen_range(0..12) {
        0..=7 => pick(rng, &["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE"]).to_string(),
        8 => pick(rng, &["OPTIONS", "TRACE", "CONNECT", "PROPFIND"]).into(),
        9 => pick(rng, &["get", "Post", "pUT"]).into(),
        10 => garbage(rng, 1..12).replace(' ', ""),
        _ => String::new(),
    };
    let version = if rng.gen_bool(0.95) {
        "HTTP/1.1"
    } else {
        pick(rng, &["HTTP/1.0", "HTTP/2.0", "HTTP/9", "FOO"])
    };
    let body: Vec<u8> = match rng.gen_range(0..5) {
        0 => vec![],
        1 => (0..rng.gen_range(1..4096)).map(|_| rng.gen()).collect(),
        2 => format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"digest":"{}","size":{}}},"layers":[{{"digest":"{}","size":-1}}]}}"#,
            digest(rng),
            rng.gen::<i64>(),
            digest(rng)
        )
        .into_bytes(),
        3 => r#"{"schemaVersion":2,"manifests":[{"digest":"sha256:"#.repeat(50).into_bytes(),
        _ => vec![b'{'; rng.gen_range(1..2000)],
    };
    let mut headers = vec![format!("Host: {addr}")];
    let length = match rng.gen_range(0..10) {
        0 => Some(format!("{}", body.len() + rng.gen_range(1..100_000))),
        1 => Some(format!(
            "{}",
            body.len().saturating_sub(rng.gen_range(1..50))
        )),
        2 => Some(pick(rng, &["-1", "abc", "99999999999999999999999", "1, 2", ""]).into()),
        3 => None,
        _ => Some(body.len().to_string()),
    };
    if let Some(l) = length {
        headers.push(format!("Content-Length: {l}"));
        if rng.gen_bool(0.05) {
            headers.push(format!("Content-Length: {}", body.len() + 1));
        }
    }
    if rng.gen_bool(0.05) {
        headers.push("Transfer-Encoding: chunked".into());
    }
    if rng.gen_bool(0.3) {
        headers.push(format!(
            "Content-Type: {}",
            pick(
                rng,
                &[
                    OCI_MANIFEST,
                    OCI_INDEX,
                    DOCKER_MANIFEST,
                    "application/octet-stream",
                    "text/plain",
                    "",
                    "application/vnd.docker.distribution.manifest.v1+prettyjws"
                ]
            )
        ));
    }
    if rng.gen_bool(0.2) {
        headers.push(format!(
            "Content-Range: {}",
            pick(
                rng,
                &[
                    "0-0",
                    "5-2",
                    "bytes=0-99",
                    "0-18446744073709551615",
                    "-",
                    "a-b",
                    "0-",
                    "1-1/2"
                ]
            )
        ));
    }
    if rng.gen_bool(0.2) {
        headers.push(format!(
            "Range: {}",
            pick(
                rng,
                &[
                    "bytes=0-0",
                    "bytes=-0",
                    "bytes=5-2",
                    "bytes=0-1,3-4",
                    "bytes=99999999999-",
                    "items=0-1",
                    "bytes=--1"
                ]
            )
        ));
    }
    if rng.gen_bool(0.4) {
        let auth = match rng.gen_range(0..6) {
            0 => format!("Basic {}", pick(rng, credentials)),
            1 => "Basic !!!not-base64!!!".into(),
            2 => format!("Bearer {}", garbage(rng, 0..300).replace(' ', ".")),
            3 => "Bearer a.b.c".into(),
            4 => "Digest username=\"x\"".into(),
            _ => String::new(),
        };
        headers.push(format!("Authorization: {auth}"));
    }
    match rng.gen_range(0..40) {
        0 => headers.push(format!(
            "X-Big: {}",
            "x".repeat(rng.gen_range(8_000..100_000))
        )),
        1 => headers.extend((0..rng.gen_range(100..300)).map(|i| format!("X-{i}: {i}"))),
        2 => headers.push("Bad Header Name: x".into()),
        3 => headers.push("X-Ctl: a\x01b".into()),
        4 => headers.push(format!("Accept: {}", "application/json, ".repeat(500))),
        _ => {}
    }
    let mut out = format!("{method} {} {version}\r\n", path(rng)).into_bytes();
    for h in headers {
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    // Sometimes the body breaks off part way.
    let cut = if rng.gen_bool(0.1) {
        rng.gen_range(0..=body.len())
    } else {
        body.len()
    };
    out.extend_from_slice(&body[..cut]);
    out
}

enum Outcome {
    Status(u16),
    /// Closed without an answer (allowed for what is not HTTP).
    Closed,
    Hung,
}

fn send(addr: &str, bytes: &[u8]) -> Outcome {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return Outcome::Hung;
    };
    s.set_read_timeout(Some(LIMIT)).unwrap();
    s.set_write_timeout(Some(LIMIT)).unwrap();
    // The server may answer and close before it has read everything.
    let _ = s.write_all(bytes);
    // No more is coming: a body that lied about its length ends here.
    let _ = s.shutdown(Shutdown::Write);
    let started = Instant::now();
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                head.extend_from_slice(&buf[..n]);
                if head.windows(2).any(|w| w == b"\r\n") {
                    break;
                }
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return Outcome::Hung;
            }
            Err(_) => break,
        }
        if started.elapsed() > LIMIT {
            return Outcome::Hung;
        }
    }
    let line = String::from_utf8_lossy(&head);
    match line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
    {
        Some(code) if line.starts_with("HTTP/") => Outcome::Status(code),
        _ => Outcome::Closed,
    }
}

/// Every file under `dir` but `skip`, with its size and time.
fn files(dir: &Path, skip: &Path) -> BTreeMap<PathBuf, (u64, SystemTime)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.starts_with(skip) {
                continue;
            }
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(p);
            } else {
                out.insert(p, (m.len(), m.modified().unwrap()));
            }
        }
    }
    out
}

/// Fuzz one server; returns the answers counted by status.
fn fuzz(
    s: &Server,
    seed: u64,
    credentials: &[&'static str],
    requests: usize,
) -> BTreeMap<u16, usize> {
    let beside = s.root.parent().unwrap().to_path_buf();
    std::fs::create_dir_all(beside.join("outside")).unwrap();
    std::fs::write(beside.join("outside/secret"), b"do not touch").unwrap();
    // The whole directory holding the root: config, htpasswd, sentinel.
    let before = files(&beside, &s.root);
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let addr = s.addr.clone();
            let credentials = credentials.to_vec();
            std::thread::spawn(move || {
                let mut rng = StdRng::seed_from_u64(seed ^ t as u64);
                let mut seen: BTreeMap<u16, usize> = BTreeMap::new();
                let mut failures = vec![];
                for _ in 0..requests / THREADS {
                    let req = request(&mut rng, &addr, &credentials);
                    let shown = String::from_utf8_lossy(&req[..req.len().min(300)]).into_owned();
                    match send(&addr, &req) {
                        Outcome::Status(code) => {
                            *seen.entry(code).or_default() += 1;
                            if code >= 500 {
                                failures.push(format!("{code} for {shown:?}"));
                            }
                        }
                        Outcome::Closed => {
                            if std::env::var("FUZZ_SHOW_CLOSED").is_ok() {
                                eprintln!("closed: {shown:?}");
                            }
                            *seen.entry(0).or_default() += 1
                        }
                        Outcome::Hung => {
                            failures.push(format!("no answer within {LIMIT:?} to {shown:?}"))
                        }
                    }
                }
                (seen, failures)
            })
        })
        .collect();
    let mut seen: BTreeMap<u16, usize> = BTreeMap::new();
    let mut failures = vec![];
    for t in threads {
        let (s, f) = t.join().unwrap();
        for (k, v) in s {
            *seen.entry(k).or_default() += v;
        }
        failures.extend(f);
    }
    assert!(
        failures.is_empty(),
        "{} bad answers:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(
        files(&beside, &s.root),
        before,
        "something outside the storage root changed"
    );
    assert_eq!(
        std::fs::read(beside.join("outside/secret")).unwrap(),
        b"do not touch"
    );
    seen
}

/// After the fuzzing: a push and a pull work, and the store verifies.
fn still_serves(s: &Server, c: &Client) {
    let (manifest, digest) = c.push_image("after/fuzz", "ok", "after the fuzz");
    let r = c.get("/v2/after/fuzz/manifests/ok");
    r.expect(200, None);
    assert_eq!(r.body, manifest);
    assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));
    assert_verifies(&s.config);
}

fn seed() -> u64 {
    std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1130)
}

fn report(what: &str, seen: &BTreeMap<u16, usize>, started: Instant) {
    let total: usize = seen.values().sum();
    let closed = seen.get(&0).copied().unwrap_or(0);
    eprintln!(
        "hostile ({what}, seed {}): {total} requests in {:.1} s; answers by status {:?}; {closed} closed without an answer; no 5xx, no hang, nothing outside the root touched",
        seed(),
        started.elapsed().as_secs_f64(),
        seen.iter().filter(|(k, _)| **k != 0).collect::<Vec<_>>()
    );
}

#[test]
fn hostile_requests_get_4xx_and_leave_the_server_serving() {
    let s = Server::start();
    let c = Client::new(&s);
    c.push_image("library/alpine", "latest", "a real image to aim at");
    let started = Instant::now();
    let seen = fuzz(&s, seed(), &["Og==", "YTpi"], REQUESTS);
    report("open registry", &seen, started);
    assert!(seen.keys().any(|k| (400..500).contains(k)));
    still_serves(&s, &c);
}

#[test]
fn hostile_requests_with_bad_credentials_get_4xx() {
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = crate::auth::htpasswd_server(dir.path(), &[("ci", "secret")], "");
    let good = base64::engine::general_purpose::STANDARD.encode("ci:secret");
    let good: &'static str = Box::leak(good.into_boxed_str());
    let started = Instant::now();
    // Fewer: each wrong password costs a bcrypt check, as it must.
    let seen = fuzz(
        &s,
        seed() ^ 0xa5,
        &["Y2k6d3Jvbmc=", "Og==", "bm9ib2R5Og==", good],
        REQUESTS / 4,
    );
    report("htpasswd", &seen, started);
    assert!(seen.get(&401).copied().unwrap_or(0) > 100, "{seen:?}");
    still_serves(&s, &Client::new(&s).basic("ci", "secret"));
}
