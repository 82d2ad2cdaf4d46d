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
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:0\nnotifications:\n  endpoints: []\n",
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
        err.contains(
            "'notifications' is a Distribution setting this registry does not implement yet"
        ),
        "{err}"
    );
    assert!(err.contains("cannot listen on 192.0.2.1:5000"), "{err}");
}
