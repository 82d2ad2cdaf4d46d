//! Shared test support: a real registry process on an ephemeral port, and a
//! small HTTP client that returns every status as data.

#![allow(dead_code)] // each test module uses a different part of this

pub mod distribution;
pub mod misbehaving;
pub mod pki;
pub mod proxy;
pub mod receiver;
pub mod webdriver;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use sha2::{Digest as _, Sha256};

pub const BIN: &str = env!("CARGO_BIN_EXE_registry");
pub const GC_BIN: &str = env!("CARGO_BIN_EXE_registry-gc");

/// Run `registry-gc CONFIG ARGS... --json`: the exit code and the report.
pub fn run_gc(config: &Path, args: &[&str]) -> (i32, serde_json::Value, String) {
    let out = Command::new(GC_BIN)
        .arg(config)
        .args(args)
        .arg("--json")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or(serde_json::Value::Null);
    (out.status.code().unwrap_or(-1), report, stderr)
}

/// `registry verify CONFIG` finds the store sound (exit 0), or the test
/// fails with its report.
pub fn assert_verifies(config: &Path) {
    let out = Command::new(BIN)
        .arg("verify")
        .arg(config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "registry verify: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A registry process serving a temporary (or given) root on 127.0.0.1:0.
pub struct Server {
    pub addr: String,
    pub root: PathBuf,
    /// The config.yml it was started with.
    pub config: PathBuf,
    child: Child,
    _dir: Option<tempfile::TempDir>,
    pub log: mpsc::Receiver<String>,
}

/// Options for a test server's config.yml.
#[derive(Clone)]
pub struct Opts {
    pub delete: bool,
    /// Lines appended inside `http:` (indented two spaces) or, unindented,
    /// new top-level sections.
    pub extra: String,
    /// Lines appended inside `storage:` (indented two spaces).
    pub storage: String,
    pub env: Vec<(String, String)>,
    /// On S3: send blob GETs to presigned URLs (the default of a real
    /// config); the shared suite reads blobs through the node instead.
    pub s3_redirects: bool,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            delete: true,
            extra: String::new(),
            storage: String::new(),
            env: vec![],
            s3_redirects: false,
        }
    }
}

impl Server {
    pub fn start() -> Server {
        Server::start_with(Opts::default())
    }

    pub fn start_with(opts: Opts) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("data");
        let mut s = Server::start_at(&root, opts);
        s._dir = Some(dir);
        s
    }

    /// Start a server on an existing root (kept by the caller).
    pub fn start_at(root: &Path, opts: Opts) -> Server {
        let cfg_dir = root.parent().unwrap().to_path_buf();
        std::fs::create_dir_all(&cfg_dir).unwrap();
        let cfg = cfg_dir.join(format!("config-{}.yml", rand_suffix()));
        let driver = match S3Target::from_env() {
            Some(s3) => s3.driver(root, opts.s3_redirects),
            None => format!("  filesystem:\n    rootdirectory: {}\n", root.display()),
        };
        std::fs::write(
            &cfg,
            format!(
                "version: 0.1\nstorage:\n{driver}  delete:\n    enabled: {}\n{}http:\n  addr: 127.0.0.1:0\n{}",
                opts.delete, opts.storage, opts.extra
            ),
        )
        .unwrap();
        let mut cmd = Command::new(BIN);
        cmd.arg("serve").arg(&cfg);
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let (child, addr, log) = spawn_and_wait(cmd);
        Server {
            addr,
            root: root.to_path_buf(),
            config: cfg,
            child,
            _dir: None,
            log,
        }
    }

    /// Whether the server logged a line containing `needle` (reading what
    /// it logged so far, waiting at most a second for more).
    pub fn log_contains(&self, needle: &str) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        while let Ok(line) = self
            .log
            .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
        {
            if line.contains(needle) {
                return true;
            }
        }
        false
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL the process, as a crash would.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let (alg, hex) = digest.split_once(':').unwrap();
        self.root
            .join("docker/registry/v2/blobs")
            .join(alg)
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Whether the store holds the blob's content at Distribution's path
    /// (a file, or an object in the bucket).
    pub fn has_blob(&self, digest: &str) -> bool {
        match S3Target::from_env() {
            None => self.blob_path(digest).exists(),
            Some(s3) => {
                let key = self.blob_path(digest);
                let rel = key.strip_prefix(&self.root).unwrap().display().to_string();
                s3.keys(&self.root).iter().any(|k| k.ends_with(&rel))
            }
        }
    }

    /// What the store holds (files, or keys in the bucket) whose path
    /// contains `needle`.
    pub fn stored_containing(&self, needle: &str) -> Vec<String> {
        match S3Target::from_env() {
            None => self
                .files_containing(needle)
                .iter()
                .map(|p| p.display().to_string())
                .collect(),
            Some(s3) => s3
                .keys(&self.root)
                .into_iter()
                .filter(|k| k.contains(needle))
                .collect(),
        }
    }

    /// Files anywhere under the root whose path contains `needle`.
    pub fn files_containing(&self, needle: &str) -> Vec<PathBuf> {
        let mut out = vec![];
        let mut stack = vec![self.root.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.to_string_lossy().contains(needle) {
                    out.push(p);
                }
            }
        }
        out
    }
}

/// The bucket the suite runs against when `TEST_S3_STORE` names one, as
/// `ENDPOINT BUCKET ACCESSKEY SECRETKEY` (scripts/test.sh sets it for the
/// second pass, against the SeaweedFS it starts). Each server then keeps
/// its store in the bucket under a prefix of its own, derived from the root
/// directory it would have used, so a restart on the same root finds it.
pub struct S3Target {
    pub endpoint: String,
    pub bucket: String,
    pub access: String,
    pub secret: String,
}

impl S3Target {
    pub fn from_env() -> Option<S3Target> {
        let v = std::env::var("TEST_S3_STORE")
            .ok()
            .filter(|v| !v.is_empty())?;
        let p: Vec<&str> = v.split_whitespace().collect();
        let [endpoint, bucket, access, secret] = p[..] else {
            panic!("TEST_S3_STORE must be 'ENDPOINT BUCKET ACCESSKEY SECRETKEY', not {v:?}");
        };
        Some(S3Target {
            endpoint: endpoint.into(),
            bucket: bucket.into(),
            access: access.into(),
            secret: secret.into(),
        })
    }

    /// The bucket, or a clear failure: for the tests of S3 itself.
    pub fn required() -> S3Target {
        S3Target::from_env().expect("TEST_S3_STORE must name a bucket for the s3 tests")
    }

    /// object_store's own client (not the registry's) on the bucket, and a
    /// runtime to drive it.
    fn client(&self) -> (object_store::aws::AmazonS3, tokio::runtime::Runtime) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = object_store::aws::AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_bucket_name(&self.bucket)
            .with_region("us-east-1")
            .with_access_key_id(&self.access)
            .with_secret_access_key(&self.secret)
            .build()
            .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        (client, rt)
    }

    /// Every key under the prefix of the server that would use `root`.
    pub fn keys(&self, root: &Path) -> Vec<String> {
        use futures_util::TryStreamExt;
        use object_store::ObjectStore;
        let (client, rt) = self.client();
        let prefix = object_store::path::Path::from(S3Target::prefix(root).trim_start_matches('/'));
        let metas: Vec<object_store::ObjectMeta> = rt
            .block_on(client.list(Some(&prefix)).try_collect())
            .unwrap();
        metas.into_iter().map(|m| m.location.to_string()).collect()
    }

    /// The key of `rel` (a path inside the layout's `v2/`) for `root`.
    fn v2_key(root: &Path, rel: &str) -> object_store::path::Path {
        let prefix = S3Target::prefix(root);
        object_store::path::Path::from(format!(
            "{}/docker/registry/v2/{rel}",
            prefix.trim_start_matches('/')
        ))
    }

    /// Write an object at `rel` inside the layout of the server on `root`.
    pub fn put(&self, root: &Path, rel: &str, data: &[u8]) {
        use object_store::ObjectStoreExt;
        let (client, rt) = self.client();
        rt.block_on(client.put(&S3Target::v2_key(root, rel), data.to_vec().into()))
            .unwrap();
    }

    /// Delete the object at `rel` inside the layout of the server on `root`.
    pub fn delete(&self, root: &Path, rel: &str) {
        use object_store::ObjectStoreExt;
        let (client, rt) = self.client();
        rt.block_on(client.delete(&S3Target::v2_key(root, rel)))
            .unwrap();
    }

    /// The prefix inside the bucket for a server that would use `root`.
    pub fn prefix(root: &Path) -> String {
        format!(
            "/it/{}",
            &sha256(root.display().to_string().as_bytes())[7..23]
        )
    }

    /// `storage.s3` (and the redirect setting) for a config, indented under `storage:`.
    pub fn driver(&self, root: &Path, redirects: bool) -> String {
        format!(
            "  s3:\n    accesskey: {}\n    secretkey: {}\n    region: us-east-1\n    regionendpoint: {}\n    bucket: {}\n    secure: false\n    rootdirectory: {}\n  redirect:\n    disable: {}\n",
            self.access,
            self.secret,
            self.endpoint,
            self.bucket,
            S3Target::prefix(root),
            !redirects,
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawn a registry command and wait for its "listening on ADDR" line.
pub fn spawn_and_wait(mut cmd: Command) -> (Child, String, mpsc::Receiver<String>) {
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start registry");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut seen = vec![];
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(i) = line.find("listening on ") {
                    let addr: String = line[i + "listening on ".len()..]
                        .chars()
                        .take_while(|c| c.is_ascii_digit() || ".:[]".contains(*c))
                        .collect();
                    return (child, addr, rx);
                }
                seen.push(line);
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("registry did not start; output:\n{}", seen.join("\n"));
            }
        }
    }
}

/// Run the registry binary to completion (for start-up failures).
pub fn run_to_exit(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Start the server with `extra` appended to a minimal config; it must
/// refuse to start. What it printed.
#[track_caller]
pub fn refused_start(extra: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yml");
    std::fs::write(
        &cfg,
        format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:0\n{extra}",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let (code, out) = run_to_exit(&["serve", cfg.to_str().unwrap()], &[]);
    assert_ne!(code, 0, "started with {extra}");
    out
}

pub fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A response, whatever its status.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The first error code of a spec error body.
    pub fn error_code(&self) -> String {
        self.json()["errors"][0]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error code in {}", String::from_utf8_lossy(&self.body)))
            .to_string()
    }

    /// Assert status and, for errors, the spec code.
    #[track_caller]
    pub fn expect(&self, status: u16, code: Option<&str>) -> &Self {
        assert_eq!(
            self.status,
            status,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        if let Some(code) = code {
            assert_eq!(self.error_code(), code);
        }
        self
    }
}

/// A client bound to one server.
pub struct Client {
    base: String,
    agent: ureq::Agent,
    /// An `Authorization` header value sent with every request.
    authorization: Option<String>,
}

impl Client {
    pub fn new(server: &Server) -> Client {
        Client::for_addr(&server.addr)
    }

    pub fn for_addr(addr: &str) -> Client {
        Client {
            base: format!("http://{addr}"),
            agent: ureq::AgentBuilder::new()
                .redirects(0)
                .timeout(Duration::from_secs(60))
                .build(),
            authorization: None,
        }
    }

    /// The same client, logging in with Basic credentials.
    pub fn basic(&self, user: &str, password: &str) -> Client {
        use base64::Engine;
        let creds = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        self.with_authorization(&format!("Basic {creds}"))
    }

    pub fn with_authorization(&self, value: &str) -> Client {
        Client {
            base: self.base.clone(),
            agent: self.agent.clone(),
            authorization: Some(value.to_string()),
        }
    }

    /// Send a request. `path` may be a full URL (a Location header).
    pub fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Resp {
        self.try_call(method, path, headers, body)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Send a request; an error if no answer came whole (a server that
    /// died, a connection cut).
    pub fn try_call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Resp, String> {
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{}", self.base, path)
        };
        let mut req = self.agent.request(method, &url);
        if let Some(a) = &self.authorization {
            req = req.set("authorization", a);
        }
        for (k, v) in headers {
            req = req.set(k, v);
        }
        let result = match body {
            Some(b) => req.send_bytes(b),
            None => req.call(),
        };
        let resp = match result {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => return Err(format!("{method} {url}: {e}")),
        };
        let status = resp.status();
        let mut headers = HashMap::new();
        for name in resp.headers_names() {
            let all: Vec<&str> = resp.all(&name);
            headers.insert(name.to_ascii_lowercase(), all.join(", "));
        }
        let mut body = vec![];
        if method != "HEAD" {
            resp.into_reader()
                .read_to_end(&mut body)
                .map_err(|e| format!("{method} {url}: reading the body: {e}"))?;
        }
        Ok(Resp {
            status,
            headers,
            body,
        })
    }

    pub fn get(&self, path: &str) -> Resp {
        self.call("GET", path, &[], None)
    }

    pub fn head(&self, path: &str) -> Resp {
        self.call("HEAD", path, &[], None)
    }

    /// Push a blob in one request; returns its digest.
    pub fn push_blob(&self, repo: &str, data: &[u8]) -> String {
        self.try_push_blob(repo, data)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// `push_blob`, or an error if no answer came whole (a server that
    /// died); any answer but 201 fails the test.
    pub fn try_push_blob(&self, repo: &str, data: &[u8]) -> Result<String, String> {
        let d = sha256(data);
        self.try_call(
            "POST",
            &format!("/v2/{repo}/blobs/uploads/?digest={d}"),
            &[("content-type", "application/octet-stream")],
            Some(data),
        )?
        .expect(201, None);
        Ok(d)
    }

    /// Push a manifest; returns the response.
    pub fn put_manifest(&self, repo: &str, reference: &str, media_type: &str, body: &[u8]) -> Resp {
        self.call(
            "PUT",
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("content-type", media_type)],
            Some(body),
        )
    }

    /// Push a small image (config + one layer + manifest) tagged `tag`;
    /// returns the manifest bytes and digest.
    pub fn push_image(&self, repo: &str, tag: &str, seed: &str) -> (Vec<u8>, String) {
        let config = format!(r#"{{"architecture":"amd64","os":"linux","seed":"{seed}"}}"#);
        let layer = format!("layer data for {seed}").repeat(100);
        let cd = self.push_blob(repo, config.as_bytes());
        let ld = self.push_blob(repo, layer.as_bytes());
        let manifest = image_manifest(&cd, config.len(), &[(&ld, layer.len())], None);
        let r = self.put_manifest(repo, tag, OCI_MANIFEST, manifest.as_bytes());
        r.expect(201, None);
        let d = sha256(manifest.as_bytes());
        assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));
        (manifest.into_bytes(), d)
    }
}

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// An OCI image manifest JSON with the given config, layers and subject.
pub fn image_manifest(
    config: &str,
    config_size: usize,
    layers: &[(&str, usize)],
    subject: Option<(&str, usize)>,
) -> String {
    let layers: Vec<String> = layers
        .iter()
        .map(|(d, s)| {
            format!(r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{d}","size":{s}}}"#)
        })
        .collect();
    let subject = subject
        .map(|(d, s)| {
            format!(r#","subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{d}","size":{s}}}"#)
        })
        .unwrap_or_default();
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":{config_size}}},"layers":[{}]{subject}}}"#,
        layers.join(",")
    )
}

/// Send a request line exactly as given (no client-side path cleaning) and
/// return the status code.
pub fn raw_status(addr: &str, method: &str, path: &str) -> u16 {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {out:?}"))
}

/// Send a request with a body over a fresh connection, tolerating the
/// server answering (and closing) before the body is all written, as a
/// server refusing an oversized body does. Returns status and body text.
pub fn raw_request(
    addr: &str,
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> (u16, String) {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let _ = write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = s.write_all(body);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let out = String::from_utf8_lossy(&out).into_owned();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {out:?}"));
    let body = out
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    (status, body)
}
