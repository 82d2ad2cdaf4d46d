//! HTTPS: server certificates, client certificates, minimum version,
//! certificate reload, and a plain request to the TLS port. The client is
//! curl, as a user would run it.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::pki::Ca;
use crate::support::*;

/// curl's exit code and body.
fn curl(args: &[&str]) -> (i32, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "--noproxy", "*"])
        .args(args)
        .output()
        .expect("curl is installed (scripts/setup.sh)");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn tls_server(ca: &Ca, extra: &str) -> Server {
    let (cert, key) = ca.issue("server", &["127.0.0.1", "localhost"]);
    Server::start_with(Opts {
        extra: format!(
            "  tls:\n    certificate: {}\n    key: {}\n{extra}",
            cert.display(),
            key.display()
        ),
        ..Opts::default()
    })
}

#[test]
fn https_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "one");
    let s = tls_server(&ca, "");
    let url = format!("https://{}/v2/", s.addr);
    let cacert = ca.cert.to_str().unwrap();
    let (code, body) = curl(&["--cacert", cacert, &url]);
    assert_eq!((code, body.as_str()), (0, "{}"));
    // Not trusted without the CA.
    let (code, _) = curl(&[&url]);
    assert_eq!(code, 60, "curl: certificate problem");
    // Plain HTTP to the TLS port: a plain answer, not garbage.
    let (code, body) = curl(&[
        "-o",
        "-",
        "-w",
        "%{http_code}",
        &format!("http://{}/v2/", s.addr),
    ]);
    assert_eq!(code, 0);
    assert!(
        body.starts_with("This port speaks HTTPS") && body.ends_with("400"),
        "{body}"
    );
    // A push and pull over HTTPS.
    let data = "layer over tls".repeat(1000);
    let digest = sha256(data.as_bytes());
    let (code, _) = curl(&[
        "--cacert",
        cacert,
        "-f",
        "-X",
        "POST",
        "--data-binary",
        &data,
        "-H",
        "Content-Type: application/octet-stream",
        &format!(
            "https://{}/v2/secure/blobs/uploads/?digest={digest}",
            s.addr
        ),
    ]);
    assert_eq!(code, 0);
    let (code, body) = curl(&[
        "--cacert",
        cacert,
        "-f",
        &format!("https://{}/v2/secure/blobs/{digest}", s.addr),
    ]);
    assert_eq!((code, body), (0, data));
}

#[test]
fn minimum_tls_version() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "one");
    let s = tls_server(&ca, "    minimumtls: tls1.3\n");
    let url = format!("https://{}/v2/", s.addr);
    let cacert = ca.cert.to_str().unwrap();
    assert_eq!(
        curl(&["--cacert", cacert, "--tls-max", "1.2", &url]).0,
        35,
        "TLS 1.2 refused"
    );
    assert_eq!(curl(&["--cacert", cacert, "--tlsv1.3", &url]).0, 0);
}

#[test]
fn client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "server");
    let clients = Ca::new(dir.path(), "clients");
    let strangers = Ca::new(dir.path(), "strangers");
    let s = tls_server(
        &ca,
        &format!("    clientcas: [{}]\n", clients.cert.display()),
    );
    let url = format!("https://{}/v2/", s.addr);
    let cacert = ca.cert.to_str().unwrap();
    let (code, _) = curl(&["--cacert", cacert, &url]);
    assert_ne!(code, 0, "no client certificate: refused");
    let with_cert = |(c, k): (std::path::PathBuf, std::path::PathBuf)| {
        curl(&[
            "--cacert",
            cacert,
            "--cert",
            c.to_str().unwrap(),
            "--key",
            k.to_str().unwrap(),
            &url,
        ])
    };
    let (code, body) = with_cert(clients.issue("ci-client", &["ci-client"]));
    assert_eq!((code, body.as_str()), (0, "{}"));
    let (code, _) = with_cert(strangers.issue("stranger", &["stranger"]));
    assert_ne!(code, 0, "a certificate from another CA: refused");
}

#[test]
fn certificate_reloaded_when_its_files_change() {
    let dir = tempfile::tempdir().unwrap();
    let old = Ca::new(dir.path(), "old");
    let s = tls_server(&old, "");
    let url = format!("https://{}/v2/", s.addr);
    assert_eq!(curl(&["--cacert", old.cert.to_str().unwrap(), &url]).0, 0);
    // Renewal by another CA, written over the same files.
    let new = Ca::new(dir.path(), "new");
    let (c, k) = new.issue("renewed", &["127.0.0.1"]);
    std::fs::copy(&k, dir.path().join("server.key")).unwrap();
    std::fs::copy(&c, dir.path().join("server.crt")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while curl(&["--cacert", new.cert.to_str().unwrap(), &url]).0 != 0 {
        assert!(Instant::now() < deadline, "new certificate never served");
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(curl(&["--cacert", old.cert.to_str().unwrap(), &url]).0, 60);
}

#[test]
fn tls_with_htpasswd_login() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "one");
    let file = dir.path().join("htpasswd");
    std::fs::write(&file, format!("alice:{}\n", bcrypt::hash("pw", 4).unwrap())).unwrap();
    let s = tls_server(
        &ca,
        &format!(
            "auth:\n  htpasswd:\n    realm: r\n    path: {}\n",
            file.display()
        ),
    );
    let url = format!("https://{}/v2/", s.addr);
    let cacert = ca.cert.to_str().unwrap();
    let (_, code) = curl(&[
        "--cacert",
        cacert,
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &url,
    ]);
    assert_eq!(code, "401");
    let (_, code) = curl(&[
        "--cacert",
        cacert,
        "-u",
        "alice:pw",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &url,
    ]);
    assert_eq!(code, "200");
}
