//! `registry-bench` against the real server: every scenario runs, every
//! answer checks out, and the report is what it says.

use std::process::Command;

use crate::support::*;

const BENCH: &str = env!("CARGO_BIN_EXE_registry-bench");

#[test]
fn every_scenario_runs_clean_against_our_server() {
    let s = Server::start();
    let out = Command::new(BENCH)
        .args([
            "run",
            &s.url(""),
            "-c",
            "2",
            "-d",
            "300ms",
            "--warmup",
            "0s",
            "--json",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}: {stderr}", out.status);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let scenarios = report["scenarios"].as_array().unwrap();
    assert_eq!(scenarios.len(), 12, "{report}");
    for sc in scenarios {
        assert!(sc["ops"].as_u64().unwrap() > 0, "{sc}");
        assert_eq!(sc["errors"].as_u64(), Some(0), "{sc}");
        assert!(
            sc["p99_ms"].as_f64().unwrap() >= sc["p50_ms"].as_f64().unwrap(),
            "{sc}"
        );
    }
    // What the catalog scenario built is really there.
    let c = Client::new(&s);
    let page = c.get("/v2/_catalog?n=1000");
    let v: serde_json::Value = serde_json::from_slice(&page.body).unwrap();
    assert_eq!(v["repositories"].as_array().unwrap().len(), 1000);
    c.get("/v2/bench/catalog/r0999/tags/list").expect(200, None);
}

#[test]
fn a_corrupted_pull_counts_as_an_error() {
    // Between the bench and the server, a proxy flips one byte in the
    // fourth MiB each connection sends back: a fast wrong answer must be
    // reported as a failure, with a non-zero exit.
    let s = Server::start();
    let proxy = CorruptingProxy::start(&s.addr, 3 << 20);
    let out = Command::new(BENCH)
        .args([
            "run",
            &format!("http://{}", proxy),
            "-s",
            "pull-1m",
            "-c",
            "1",
            "-n",
            "8",
            "-d",
            "10s",
            "--warmup",
            "0s",
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sc = &report["scenarios"][0];
    assert!(sc["errors"].as_u64().unwrap() >= 1, "{sc}");
    let first = sc["first_errors"][0].as_str().unwrap();
    assert!(first.contains("hashes to"), "{first}");
}

/// A TCP proxy that corrupts one byte per connection, `at` bytes into the
/// server's answers.
struct CorruptingProxy;

impl CorruptingProxy {
    fn start(upstream: &str, at: u64) -> String {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let upstream = upstream.to_string();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = std::net::TcpStream::connect(&upstream) else {
                    continue;
                };
                let (mut c_in, mut s_out) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c_in, &mut s_out);
                    let _ = s_out.shutdown(std::net::Shutdown::Write);
                });
                let (mut s_in, mut c_out) = (server, client);
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 64 << 10];
                    let mut seen = 0u64;
                    loop {
                        let n = match s_in.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if seen <= at && at < seen + n as u64 {
                            buf[(at - seen) as usize] ^= 0x55;
                        }
                        seen += n as u64;
                        if c_out.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = c_out.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        addr
    }
}

#[test]
fn bad_arguments_are_named() {
    for (args, needle) in [
        (vec!["run", "ftp://x"], "http://"),
        (
            vec!["run", "http://127.0.0.1:1", "-s", "nope"],
            "\"nope\" is not a scenario",
        ),
        (
            vec!["run", "http://127.0.0.1:1", "-c", "0"],
            "--concurrency",
        ),
        (
            vec!["compare", "--theirs", "/nonexistent/docker-registry"],
            "apt-get install docker-registry",
        ),
    ] {
        let out = Command::new(BENCH).args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}
