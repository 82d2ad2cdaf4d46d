//! Start-up behaviour: config errors, environment overrides, version.

use crate::support::*;

#[test]
fn version_flag() {
    let out = std::process::Command::new(BIN)
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("registry "), "{text}");
}

#[test]
fn tutorial_config_error_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yml");
    std::fs::write(
        &cfg,
        "version: 0.1\n  log:\n    level: debug\n  storage:\n    filesystem:\n      rootdirectory: /opt/software/dockerRegistry\n  http:\n    addr: 5000\n",
    )
    .unwrap();
    let (code, err) = run_to_exit(&["serve", cfg.to_str().unwrap()], &[]);
    assert_ne!(code, 0);
    assert!(
        err.contains("config.yml line 2: 'log:' is indented under line 1"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn unknown_key_refused_and_missing_file_named() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yml");
    std::fs::write(&cfg, "version: 0.1\nhttp:\n  adress: :5000\n").unwrap();
    let (code, err) = run_to_exit(&["serve", cfg.to_str().unwrap()], &[]);
    assert_ne!(code, 0);
    assert!(
        err.contains("unknown configuration key 'http.adress'"),
        "{err}"
    );
    let (code, err) = run_to_exit(&["serve", "/nonexistent/config.yml"], &[]);
    assert_ne!(code, 0);
    assert!(err.contains("/nonexistent/config.yml"), "{err}");
}

#[test]
fn environment_overrides_apply() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("from-env");
    let s = Server::start_with(Opts {
        env: vec![
            (
                "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY".into(),
                root.display().to_string(),
            ),
            ("REGISTRY_STORAGE_DELETE_ENABLED".into(), "false".into()),
            ("REGISTRY_HTTP_HEADERS_X-TEST".into(), "[yes]".into()),
        ],
        ..Opts::default()
    });
    let c = Client::new(&s);
    let d = c.push_blob("r", b"env");
    let (alg, hex) = d.split_once(':').unwrap();
    assert!(root
        .join(format!(
            "docker/registry/v2/blobs/{alg}/{}/{hex}/data",
            &hex[..2]
        ))
        .exists());
    c.call("DELETE", &format!("/v2/r/blobs/{d}"), &[], None)
        .expect(405, Some("UNSUPPORTED"));
}

#[test]
fn unimplemented_keys_are_logged_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.yml");
    std::fs::write(
        &cfg,
        format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:0\nredis:\n  addr: localhost:6379\n",
            dir.path().join("d").display()
        ),
    )
    .unwrap();
    // Serve with an address that cannot be bound, (TEST-NET, never local), so the process exits
    // after printing its warnings.
    let (code, err) = run_to_exit(
        &["serve", cfg.to_str().unwrap()],
        &[("REGISTRY_HTTP_ADDR", "192.0.2.1:5000")],
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("'redis' is a Distribution setting this registry does not implement yet"),
        "{err}"
    );
    assert!(err.contains("cannot listen on 192.0.2.1:5000"), "{err}");
    // A config path alone is served, as registry:2's entry point does.
    let (code, err) = run_to_exit(
        &[cfg.to_str().unwrap()],
        &[("REGISTRY_HTTP_ADDR", "192.0.2.1:5000")],
    );
    assert_ne!(code, 0);
    assert!(err.contains("cannot listen on 192.0.2.1:5000"), "{err}");
}

#[test]
fn json_logs_carry_log_fields() {
    let s = Server::start_with(Opts {
        extra:
            "log:\n  formatter: json\n  fields:\n    service: registry\n    environment: test env\n"
                .into(),
        ..Opts::default()
    });
    Client::new(&s).get("/v2/").expect(200, None);
    let line = wait_for_line(&s, "\"registry::access\"");
    let v: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(v["service"], "registry");
    assert_eq!(v["environment"], "test env");
    assert_eq!(v["fields"]["http.response.status"], 200);
    assert_eq!(v["fields"]["http.request.method"], "GET");
    assert_eq!(v["fields"]["message"], "response completed");
    assert_eq!(v["fields"]["route"], "base");
}

#[test]
fn text_logs_carry_log_fields() {
    let s = Server::start_with(Opts {
        extra: "log:\n  fields:\n    service: registry\n".into(),
        ..Opts::default()
    });
    Client::new(&s).get("/v2/_catalog").expect(200, None);
    let line = wait_for_line(&s, "route=\"catalog\"");
    assert!(line.ends_with(" service=registry"), "{line}");
    assert!(
        !line.contains('\x1b'),
        "no colour codes when not on a terminal: {line}"
    );
}

fn wait_for_line(s: &Server, needle: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if let Ok(line) = s.log.recv_timeout(std::time::Duration::from_millis(200)) {
            if line.contains(needle) {
                return line;
            }
        }
    }
    panic!("no log line containing {needle}");
}

#[test]
fn abandoned_uploads_are_purged() {
    let s = Server::start_with(Opts {
        storage: "  maintenance:\n    uploadpurging:\n      enabled: true\n      age: 1s\n      interval: 1s\n      dryrun: false\n"
            .into(),
        ..Opts::default()
    });
    let c = Client::new(&s);
    let r = c.call("POST", "/v2/r/blobs/uploads/", &[], Some(b""));
    let loc = r.header("location").unwrap().to_string();
    c.call("PATCH", &loc, &[], Some(b"abandoned"))
        .expect(202, None);
    assert!(!s.files_containing("/_uploads/").is_empty());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !s.files_containing("/_uploads/").is_empty() {
        assert!(std::time::Instant::now() < deadline, "upload never purged");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    c.get(&loc).expect(404, Some("BLOB_UPLOAD_UNKNOWN"));
}

#[test]
fn read_only_mode_refuses_writes_serves_reads() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let d = {
        let s = Server::start_at(&root, Opts::default());
        Client::new(&s).push_image("r", "t", "x");
        Client::new(&s).push_blob("r", b"blob")
    };
    let s = Server::start_at(
        &root,
        Opts {
            storage: "  maintenance:\n    readonly:\n      enabled: true\n".into(),
            ..Opts::default()
        },
    );
    let c = Client::new(&s);
    c.get("/v2/r/manifests/t").expect(200, None);
    c.get(&format!("/v2/r/blobs/{d}")).expect(200, None);
    c.call("POST", "/v2/r/blobs/uploads/", &[], Some(b""))
        .expect(405, Some("UNSUPPORTED"));
    c.call("DELETE", "/v2/r/manifests/t", &[], None)
        .expect(405, Some("UNSUPPORTED"));
}
