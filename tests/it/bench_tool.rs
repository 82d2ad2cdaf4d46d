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
    c.get("/v2/bench/catalog/r00999/tags/list")
        .expect(200, None);
}

#[test]
fn a_corrupted_pull_counts_as_an_error() {
    // Between the bench and the server, a proxy flips one byte in the
    // fourth MiB each connection sends back: a fast wrong answer must be
    // reported as a failure, with a non-zero exit.
    let s = Server::start();
    let proxy = proxy::FaultProxy::start(
        &s.addr,
        proxy::Faults {
            flip_downstream_at: Some(3 << 20),
            ..Default::default()
        },
    );
    let out = Command::new(BENCH)
        .args([
            "run",
            &format!("http://{}", proxy.addr),
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
