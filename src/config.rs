//! The configuration model: CNCF Distribution's `config.yml` schema, the
//! `REGISTRY_SECTION_KEY` environment overrides, and validation.
//!
//! Loading goes in four steps, each with errors that name what is wrong:
//! 1. the YAML text is parsed into a tree (with a check for the common
//!    mis-indentation of tutorial configs, reported by line);
//! 2. `REGISTRY_*` environment variables are applied onto the tree, values
//!    parsed as YAML scalars, as Distribution does;
//! 3. every key is checked against the known schema: a key we implement is
//!    read, a Distribution key we don't implement yet is reported as a
//!    warning, a key that matches nothing is an error;
//! 4. the tree is read into typed sections with real defaults.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use yaml_serde::{Mapping, Value};

pub use crate::storage::backend::s3::S3Config;
use crate::storage::backend::s3::{DEFAULT_CHUNK_SIZE, MIN_CHUNK_SIZE};

/// The whole configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub log: LogConfig,
    pub storage: StorageConfig,
    pub http: HttpConfig,
    pub auth: AuthConfig,
    pub catalog: CatalogConfig,
    /// The web page (our extension, the top-level `ui` section).
    pub ui: UiConfig,
    /// Where events of pushes, pulls, mounts and deletes are sent.
    pub notifications: NotificationsConfig,
    /// Pull-through caches of other registries: Distribution's `proxy`
    /// (every repository), and ours, `caches` (one per name prefix).
    pub caches: Vec<ProxyConfig>,
    /// Things worth telling the operator at start (unimplemented keys, odd forms).
    pub warnings: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Debug)]
pub struct LogConfig {
    pub level: LogLevel,
    pub formatter: LogFormat,
    /// Static fields added to every log line (`log.fields`).
    pub fields: BTreeMap<String, String>,
    pub accesslog: bool,
}

#[derive(Clone, Debug)]
pub struct StorageConfig {
    /// `storage.s3`: the store is in a bucket; `rootdirectory` is unused.
    pub s3: Option<S3Config>,
    pub rootdirectory: PathBuf,
    /// Upload data written with O_DIRECT (our extension: `storage.filesystem.directwrites`).
    pub directwrites: bool,
    /// Memory for upload buffers in all (ours: `storage.filesystem.uploadmemory`).
    pub uploadmemory: usize,
    pub delete_enabled: bool,
    pub readonly: bool,
    pub uploadpurging: UploadPurging,
}

impl StorageConfig {
    /// Open the store this names: in a bucket (`storage.s3`) or under
    /// `rootdirectory`.
    pub fn open(
        &self,
        options: crate::storage::StoreOptions,
    ) -> Result<std::sync::Arc<crate::storage::Store>, crate::storage::StorageError> {
        match &self.s3 {
            Some(s3) => crate::storage::Store::open_s3(s3, options),
            None => crate::storage::Store::open(&self.rootdirectory, options),
        }
    }
}

#[derive(Clone, Debug)]
pub struct UploadPurging {
    pub enabled: bool,
    pub age: Duration,
    pub interval: Duration,
    pub dryrun: bool,
}

#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// `host:port` to bind; an empty host means every interface.
    pub addr: String,
    /// Path prefix the API lives under, always starting and ending with `/`.
    pub prefix: String,
    /// Externally visible base URL used for `Location` headers.
    pub host: Option<String>,
    pub relativeurls: bool,
    /// Headers added to every response.
    pub headers: Vec<(String, String)>,
    /// Largest manifest body accepted (our extension: `http.maxmanifestsize`).
    pub max_manifest_bytes: u64,
    pub tls: Option<TlsConfig>,
    /// Connections served at once (ours: `http.maxconnections`); more wait.
    pub max_connections: usize,
    /// Largest request head (ours: `http.maxheaderbytes`).
    pub max_header_bytes: usize,
    /// Time allowed to send a request head (ours: `http.headertimeout`).
    pub header_timeout: Duration,
    /// Blob bodies sent by the kernel (`sendfile`) on plain HTTP from a
    /// file system (ours: `http.sendfile`).
    pub sendfile: bool,
    /// `http.secret`: signs the web page's login sessions. Nodes behind one
    /// load balancer need the same; without it each process makes its own.
    pub secret: Option<String>,
    /// `http.debug`: a second address for operators' endpoints.
    pub debug: Option<DebugConfig>,
}

/// `http.debug.addr` (as in Distribution): `/metrics` moves there, off the
/// public port; `/healthz` and `/readyz` are answered on both.
#[derive(Clone, Debug)]
pub struct DebugConfig {
    pub addr: String,
    /// Where Prometheus text is served (`http.debug.prometheus.path`), or
    /// none when `http.debug.prometheus.enabled` is false.
    pub metrics_path: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub struct AuthConfig {
    /// `auth.anonymous`: alone (or with nothing configured) open access;
    /// beside `htpasswd` or `token`, anonymous clients may pull.
    pub anonymous: Option<bool>,
    pub htpasswd: Option<HtpasswdConfig>,
    pub token: Option<TokenConfig>,
    /// Our extension: per-repository rights (top-level `access` section).
    pub access: AccessConfig,
}

#[derive(Clone, Debug)]
pub struct HtpasswdConfig {
    pub realm: String,
    pub path: PathBuf,
}

#[derive(Clone, Debug)]
pub struct TokenConfig {
    pub realm: String,
    pub service: String,
    pub issuer: String,
    pub rootcertbundle: PathBuf,
}

/// Rules granting actions on repositories to users and groups.
#[derive(Clone, Debug, Default)]
pub struct AccessConfig {
    pub groups: BTreeMap<String, Vec<String>>,
    pub rules: Vec<AccessRule>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessRule {
    /// Glob patterns: `*` matches any run of characters, `/` included.
    pub repositories: Vec<String>,
    /// User names, `@group`, `*` (any logged-in user) or `anonymous`.
    pub users: Vec<String>,
    /// `pull`, `push`, `delete`, or `*` for all three.
    pub actions: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

#[derive(Clone, Debug)]
pub struct TlsConfig {
    pub certificate: PathBuf,
    pub key: PathBuf,
    /// CA files for client certificates: when set, clients must present one.
    pub clientcas: Vec<PathBuf>,
    pub minimum: TlsVersion,
}

/// `proxy`: serve another registry's content, fetching what is missing.
#[derive(Clone, Debug, PartialEq)]
pub struct ProxyConfig {
    /// The repositories it serves: those whose names start with this
    /// (`hub/`), named upstream without it; empty for every repository.
    pub prefix: String,
    /// `http(s)://host[:port]` of the upstream registry.
    pub remoteurl: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// How long a tag's answer from the upstream is trusted before the
    /// upstream is asked again (0, the default: every time).
    pub ttl: Duration,
}

/// `notifications`: Distribution's endpoints, with its keys and defaults.
#[derive(Clone, Debug, Default)]
pub struct NotificationsConfig {
    pub endpoints: Vec<EndpointConfig>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct EndpointConfig {
    pub name: String,
    /// Where events are POSTed: `http://` or `https://`, with a path.
    pub url: String,
    /// Sent with every POST (Distribution writes each value as a list).
    pub headers: Vec<(String, String)>,
    /// For one POST, from connecting to the answer's end (default 1s).
    pub timeout: Duration,
    /// Failures in a row after which each retry waits `backoff` (default 10).
    pub threshold: u32,
    /// The wait between retries past the threshold (default 1s).
    pub backoff: Duration,
    /// `ignoredmediatypes` and `ignore.mediatypes`: events about these are not sent.
    pub ignored_media_types: Vec<String>,
    /// `ignore.actions`: push, pull, mount, delete.
    pub ignored_actions: Vec<String>,
    pub disabled: bool,
}

#[derive(Clone, Debug)]
pub struct UiConfig {
    /// Whether `/` serves the web page (on unless `ui.enabled: false`).
    /// `docker search` is answered either way, as `_catalog` is.
    pub enabled: bool,
}

#[derive(Clone, Debug)]
pub struct CatalogConfig {
    pub maxentries: usize,
}

/// A configuration problem, with the location or key that causes it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{file} line {line}: {message}")]
    Syntax {
        file: String,
        line: usize,
        message: String,
    },
    #[error("{file}: {message}")]
    Invalid { file: String, message: String },
}

/// The default manifest size cap: the spec asks registries to take at least 4 MiB.
pub const DEFAULT_MAX_MANIFEST_BYTES: u64 = 4 << 20;

impl Config {
    /// Read a config file and apply the process environment's overrides.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::from_yaml(&path.display().to_string(), &text, std::env::vars())
    }

    /// Parse config text with the given environment (`REGISTRY_*` entries are used).
    pub fn from_yaml(
        file: &str,
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            file: file.to_string(),
            message,
        };
        let mut tree = parse_tree(file, text)?;
        let mut warnings = Vec::new();
        let mut env: Vec<_> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("REGISTRY_"))
            .collect();
        env.sort();
        for (key, value) in env {
            apply_env(&mut tree, &key, &value, &mut warnings);
        }
        check_keys(&tree, SCHEMA, "", &mut warnings).map_err(invalid)?;
        read_config(&tree, warnings).map_err(invalid)
    }
}

// ---------------------------------------------------------------------------
// Step 1: text to tree.

fn parse_tree(file: &str, text: &str) -> Result<Value, ConfigError> {
    if let Some((line, message)) = find_misindented_key(text) {
        return Err(ConfigError::Syntax {
            file: file.to_string(),
            line,
            message,
        });
    }
    let tree: Value = yaml_serde::from_str(text).map_err(|e| {
        let (line, column) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((0, 0));
        // Keep the parser's own words but drop its position suffix: we give ours.
        let msg = e.to_string();
        let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
        ConfigError::Syntax {
            file: file.to_string(),
            line,
            message: format!("column {column}: {msg}"),
        }
    })?;
    match tree {
        Value::Mapping(_) => Ok(tree),
        Value::Null => Ok(Value::Mapping(Mapping::new())),
        _ => Err(ConfigError::Invalid {
            file: file.to_string(),
            message:
                "the configuration must be a mapping of sections (version, log, storage, http, ...)"
                    .into(),
        }),
    }
}

/// The mistake of tutorial configs: a `key:` line indented under a line that
/// already holds a value (`version: 0.1` followed by `  log:`). YAML parsers
/// report it as "mapping values are not allowed", which helps nobody.
fn find_misindented_key(text: &str) -> Option<(usize, String)> {
    let mut prev: Option<(usize, usize, &str)> = None; // (line, indent, text)
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let trimmed = raw.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with("---") {
            continue;
        }
        let indent = raw.len() - trimmed.len();
        if let Some((pline, pindent, ptext)) = prev {
            if indent > pindent && starts_with_key(trimmed) && has_inline_value(ptext) {
                let key = trimmed.split(':').next().unwrap_or(trimmed);
                return Some((
                    line_no,
                    format!(
                        "'{key}:' is indented under line {pline} ('{}'), which already has a value. \
                         Keys of the same mapping must line up: top-level sections such as \
                         version, log, storage, http and auth start at column 1, and each nested \
                         key is indented under its section",
                        ptext.trim()
                    ),
                ));
            }
        }
        prev = Some((line_no, indent, trimmed));
    }
    None
}

fn starts_with_key(line: &str) -> bool {
    let key_end = line.find(':');
    match key_end {
        Some(end) if end > 0 => {
            let key = &line[..end];
            let after = &line[end + 1..];
            !key.starts_with('-')
                && !key.contains(' ')
                && (after.is_empty() || after.starts_with(' ') || after.starts_with('\t'))
        }
        _ => false,
    }
}

/// `key: value` where the value is a plain scalar on the same line.
fn has_inline_value(line: &str) -> bool {
    if !starts_with_key(line) {
        return false;
    }
    let value = line.split_once(':').map(|x| x.1).unwrap_or("").trim();
    let value = value.split(" #").next().unwrap_or("").trim();
    !(value.is_empty()
        || value.starts_with('|')
        || value.starts_with('>')
        || value.starts_with('&')
        || value.starts_with('!')
        || (value.starts_with('[') && !value.ends_with(']'))
        || (value.starts_with('{') && !value.ends_with('}')))
}

// ---------------------------------------------------------------------------
// Step 2: environment overrides.

fn apply_env(tree: &mut Value, var: &str, raw: &str, warnings: &mut Vec<String>) {
    let rest = &var["REGISTRY_".len()..];
    let segments: Vec<String> = rest.split('_').map(|s| s.to_ascii_lowercase()).collect();
    // Resolve the segments against the schema; free-form maps take the rest as one key.
    let mut path: Vec<String> = Vec::new();
    let mut schema = Some(SCHEMA);
    let mut i = 0;
    while i < segments.len() {
        match schema {
            Some(entries) => match entries.iter().find(|(k, _)| *k == segments[i]) {
                Some((k, node)) => {
                    path.push(k.to_string());
                    schema = match node {
                        Node::Section(s) | Node::Choice(s) => Some(s),
                        Node::FreeMap => None,
                        _ => {
                            if i + 1 < segments.len() {
                                // REGISTRY_FOO_BAR where foo is a leaf: not ours.
                                warnings.push(format!(
                                    "environment variable {var} matches no configuration key; ignored"
                                ));
                                return;
                            }
                            Some(&[])
                        }
                    };
                    i += 1;
                }
                None => {
                    // Not a config key: Kubernetes and Docker links inject REGISTRY_PORT and friends.
                    warnings.push(format!(
                        "environment variable {var} matches no configuration key; ignored"
                    ));
                    return;
                }
            },
            None => {
                path.push(segments[i..].join("_"));
                break;
            }
        }
    }
    let value: Value = yaml_serde::from_str(raw).unwrap_or_else(|_| Value::String(raw.into()));
    let value = if raw.is_empty() {
        Value::String(String::new())
    } else {
        value
    };
    let is_choice = choice_at(&path);
    set_path(tree, &path, value, is_choice);
}

/// Whether `path` names a section whose single key selects a driver
/// (`storage`, `auth`): `REGISTRY_AUTH=htpasswd` selects htpasswd.
fn choice_at(path: &[String]) -> bool {
    let mut entries = SCHEMA;
    let mut node = None;
    for seg in path {
        let Some((_, n)) = entries.iter().find(|(k, _)| *k == seg) else {
            return false;
        };
        node = Some(n);
        entries = match n {
            Node::Section(s) | Node::Choice(s) => s,
            _ => &[],
        };
    }
    matches!(node, Some(Node::Choice(_)))
}

fn set_path(tree: &mut Value, path: &[String], value: Value, is_choice: bool) {
    let mut cur = tree;
    for seg in &path[..path.len() - 1] {
        if !matches!(cur, Value::Mapping(_)) {
            *cur = Value::Mapping(Mapping::new());
        }
        let Value::Mapping(m) = cur else {
            unreachable!()
        };
        cur = m
            .entry(Value::String(seg.clone()))
            .or_insert(Value::Mapping(Mapping::new()));
    }
    if !matches!(cur, Value::Mapping(_)) {
        *cur = Value::Mapping(Mapping::new());
    }
    let Value::Mapping(m) = cur else {
        unreachable!()
    };
    let last = Value::String(path[path.len() - 1].clone());
    if is_choice {
        if let Value::String(driver) = &value {
            // Select the named driver, keep its settings, drop the other drivers.
            let section = m.entry(last).or_insert(Value::Mapping(Mapping::new()));
            if !matches!(section, Value::Mapping(_)) {
                *section = Value::Mapping(Mapping::new());
            }
            let Value::Mapping(sm) = section else {
                unreachable!()
            };
            let drivers = driver_keys(&path[path.len() - 1]);
            sm.retain(|k, _| {
                k.as_str().is_some_and(|k| k == driver)
                    || !k.as_str().is_some_and(|k| drivers.contains(&k))
            });
            sm.entry(Value::String(driver.to_ascii_lowercase()))
                .or_insert(Value::Mapping(Mapping::new()));
            return;
        }
    }
    m.insert(last, value);
}

fn driver_keys(section: &str) -> &'static [&'static str] {
    match section {
        "storage" => STORAGE_DRIVERS,
        "auth" => &["silly", "token", "htpasswd", "anonymous"],
        _ => &[],
    }
}

// ---------------------------------------------------------------------------
// Step 3: the schema.

/// What we know about a key.
enum Node {
    /// Read by this registry.
    Leaf,
    /// A mapping with known keys.
    Section(&'static [(&'static str, Node)]),
    /// A mapping whose keys select one driver (`storage`, `auth`).
    Choice(&'static [(&'static str, Node)]),
    /// A mapping with free-form keys (`http.headers`, `log.fields`).
    FreeMap,
    /// A Distribution setting we accept but do not act on yet: warn by name.
    Unimplemented,
    /// A Distribution setting that we must not ignore (security, storage
    /// location): refuse to start rather than run without it.
    Refused(&'static str),
}

const STORAGE_DRIVERS: &[&str] = &[
    "filesystem",
    "inmemory",
    "s3",
    "azure",
    "gcs",
    "swift",
    "oss",
];

const SCHEMA: &[(&str, Node)] = &[
    ("version", Node::Leaf),
    ("loglevel", Node::Leaf),
    (
        "log",
        Node::Section(&[
            ("level", Node::Leaf),
            ("formatter", Node::Leaf),
            ("fields", Node::FreeMap),
            ("accesslog", Node::Section(&[("disabled", Node::Leaf)])),
            ("hooks", Node::Unimplemented),
            ("reportcaller", Node::Unimplemented),
        ]),
    ),
    (
        "storage",
        Node::Choice(&[
            (
                "filesystem",
                Node::Section(&[
                    ("rootdirectory", Node::Leaf),
                    ("directwrites", Node::Leaf),
                    ("uploadmemory", Node::Leaf),
                    ("maxthreads", Node::Unimplemented),
                ]),
            ),
            ("inmemory", Node::Refused("the inmemory storage driver is not available; use filesystem")),
            (
                "s3",
                Node::Section(&[
                    ("accesskey", Node::Leaf),
                    ("secretkey", Node::Leaf),
                    ("sessiontoken", Node::Leaf),
                    ("region", Node::Leaf),
                    ("regionendpoint", Node::Leaf),
                    ("bucket", Node::Leaf),
                    ("forcepathstyle", Node::Leaf),
                    ("secure", Node::Leaf),
                    ("skipverify", Node::Leaf),
                    ("v4auth", Node::Leaf),
                    ("rootdirectory", Node::Leaf),
                    ("chunksize", Node::Leaf),
                    // Read only to refuse what we would not honour (see read_s3).
                    ("encrypt", Node::Leaf),
                    ("keyid", Node::Leaf),
                    ("storageclass", Node::Leaf),
                    ("objectacl", Node::Leaf),
                    ("usedualstack", Node::Leaf),
                    ("accelerate", Node::Leaf),
                    ("useragent", Node::Unimplemented),
                    ("multipartcopychunksize", Node::Unimplemented),
                    ("multipartcopymaxconcurrency", Node::Unimplemented),
                    ("multipartcopythresholdsize", Node::Unimplemented),
                    ("loglevel", Node::Unimplemented),
                ]),
            ),
            ("azure", Node::Refused("the azure storage driver is not implemented; use filesystem")),
            ("gcs", Node::Refused("the gcs storage driver is not implemented; use filesystem")),
            ("swift", Node::Refused("the swift storage driver is not implemented; use filesystem")),
            ("oss", Node::Refused("the oss storage driver is not implemented; use filesystem")),
            ("delete", Node::Section(&[("enabled", Node::Leaf)])),
            ("redirect", Node::Section(&[("disable", Node::Leaf)])),
            ("cache", Node::Unimplemented),
            (
                "maintenance",
                Node::Section(&[
                    (
                        "uploadpurging",
                        Node::Section(&[
                            ("enabled", Node::Leaf),
                            ("age", Node::Leaf),
                            ("interval", Node::Leaf),
                            ("dryrun", Node::Leaf),
                        ]),
                    ),
                    ("readonly", Node::Section(&[("enabled", Node::Leaf)])),
                ]),
            ),
            ("tag", Node::Unimplemented),
        ]),
    ),
    (
        "auth",
        Node::Choice(&[
            ("anonymous", Node::Leaf),
            ("silly", Node::Refused("auth.silly is not supported; use htpasswd or token")),
            (
                "token",
                Node::Section(&[
                    ("realm", Node::Leaf),
                    ("service", Node::Leaf),
                    ("issuer", Node::Leaf),
                    ("rootcertbundle", Node::Leaf),
                    ("jwks", Node::Refused("auth.token.jwks is not implemented; give the signing certificates in rootcertbundle")),
                    ("autoredirect", Node::Unimplemented),
                    ("signingalgorithms", Node::Unimplemented),
                ]),
            ),
            ("htpasswd", Node::Section(&[("realm", Node::Leaf), ("path", Node::Leaf)])),
        ]),
    ),
    ("access", Node::Section(&[("groups", Node::FreeMap), ("rules", Node::Leaf)])),
    (
        "http",
        Node::Section(&[
            ("addr", Node::Leaf),
            ("net", Node::Leaf),
            ("prefix", Node::Leaf),
            ("host", Node::Leaf),
            ("relativeurls", Node::Leaf),
            ("headers", Node::FreeMap),
            ("maxmanifestsize", Node::Leaf),
            ("secret", Node::Leaf),
            ("draintimeout", Node::Unimplemented),
            (
                "tls",
                Node::Section(&[
                    ("certificate", Node::Leaf),
                    ("key", Node::Leaf),
                    ("clientcas", Node::Leaf),
                    ("minimumtls", Node::Leaf),
                    ("ciphersuites", Node::Unimplemented),
                    ("letsencrypt", Node::Refused("http.tls.letsencrypt is not implemented; give certificate and key files")),
                ]),
            ),
            ("maxconnections", Node::Leaf),
            ("maxheaderbytes", Node::Leaf),
            ("headertimeout", Node::Leaf),
            ("sendfile", Node::Leaf),
            (
                "debug",
                Node::Section(&[
                    ("addr", Node::Leaf),
                    (
                        "prometheus",
                        Node::Section(&[("enabled", Node::Leaf), ("path", Node::Leaf)]),
                    ),
                ]),
            ),
            ("http2", Node::Unimplemented),
            ("h2c", Node::Unimplemented),
        ]),
    ),
    ("catalog", Node::Section(&[("maxentries", Node::Leaf)])),
    ("ui", Node::Section(&[("enabled", Node::Leaf)])),
    ("caches", Node::Leaf),
    ("middleware", Node::Unimplemented),
    ("reporting", Node::Unimplemented),
    (
        "notifications",
        Node::Section(&[
            ("events", Node::Section(&[("includereferences", Node::Unimplemented)])),
            ("endpoints", Node::Leaf),
        ]),
    ),
    ("redis", Node::Unimplemented),
    ("health", Node::Unimplemented),
    (
        "proxy",
        Node::Section(&[
            ("remoteurl", Node::Leaf),
            ("username", Node::Leaf),
            ("password", Node::Leaf),
            ("ttl", Node::Leaf),
            ("exec", Node::Refused("proxy.exec is not implemented; give username and password")),
            ("cachewritetimeout", Node::Unimplemented),
        ]),
    ),
    ("compatibility", Node::Unimplemented),
    ("validation", Node::Unimplemented),
    ("policy", Node::Unimplemented),
];

fn check_keys(
    value: &Value,
    schema: &[(&str, Node)],
    prefix: &str,
    warnings: &mut Vec<String>,
) -> Result<(), String> {
    let Value::Mapping(map) = value else {
        if prefix.is_empty() {
            return Err("the configuration must be a mapping".into());
        }
        return Err(format!(
            "{prefix} must be a mapping of keys, not a single value"
        ));
    };
    for (k, v) in map {
        let key = match k {
            Value::String(s) => s.clone(),
            other => yaml_serde::to_string(other)
                .unwrap_or_default()
                .trim()
                .to_string(),
        };
        let full = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        let Some((_, node)) = schema.iter().find(|(name, _)| *name == key) else {
            let known: Vec<&str> = schema.iter().map(|(n, _)| *n).collect();
            return Err(format!(
                "unknown configuration key '{full}' (known keys here: {})",
                known.join(", ")
            ));
        };
        match node {
            Node::Leaf => {}
            Node::Section(s) | Node::Choice(s) => {
                if !v.is_null() {
                    check_keys(v, s, &full, warnings)?;
                }
            }
            Node::FreeMap => {
                if !v.is_null() && !v.is_mapping() {
                    return Err(format!("{full} must be a mapping"));
                }
            }
            Node::Unimplemented => warnings.push(format!(
                "'{full}' is a Distribution setting this registry does not implement yet; it is ignored"
            )),
            Node::Refused(why) => return Err(format!("'{full}': {why}")),
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Step 4: tree to typed sections.

fn lookup<'a>(tree: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = tree;
    for seg in path.split('.') {
        cur = cur.as_mapping()?.get(seg)?;
    }
    if cur.is_null() {
        None
    } else {
        Some(cur)
    }
}

fn get_bool(tree: &Value, path: &str, default: bool) -> Result<bool, String> {
    match lookup(tree, path) {
        None => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(false),
        Some(other) => Err(format!("{path} must be true or false, not {}", show(other))),
    }
}

fn get_string(tree: &Value, path: &str) -> Result<Option<String>, String> {
    match lookup(tree, path) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(Value::Bool(b)) => Ok(Some(b.to_string())),
        Some(other) => Err(format!(
            "{path} must be a single value, not {}",
            show(other)
        )),
    }
}

fn get_duration(tree: &Value, path: &str, default: Duration) -> Result<Duration, String> {
    match get_string(tree, path)? {
        None => Ok(default),
        Some(s) => parse_duration(&s).map_err(|e| format!("{path}: {e}")),
    }
}

fn get_count(tree: &Value, path: &str, default: usize) -> Result<usize, String> {
    match get_string(tree, path)? {
        None => Ok(default),
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("{path} {s:?} must be a positive number")),
    }
}

/// A size (`64KiB`, `24MiB`, a number of bytes) between `min` and `max`,
/// named in the message as the config writes them.
fn get_size_within(
    tree: &Value,
    path: &str,
    default: u64,
    (min, min_text): (u64, &str),
    (max, max_text): (u64, &str),
) -> Result<u64, String> {
    match get_string(tree, path)? {
        None => Ok(default),
        Some(s) => parse_size(&s)
            .ok()
            .filter(|n| (min..=max).contains(n))
            .ok_or_else(|| format!("{path} {s:?} must be a size from {min_text} to {max_text}")),
    }
}

/// A list of strings, also accepting one string.
fn get_strings(v: Option<&Value>, path: &str) -> Result<Vec<String>, String> {
    match v {
        None | Some(Value::Null) => Ok(vec![]),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Sequence(items)) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => Ok(s.clone()),
                Value::Number(n) => Ok(n.to_string()),
                other => Err(format!("{path}: {} is not a name", show(other))),
            })
            .collect(),
        Some(other) => Err(format!("{path} must be a list, not {}", show(other))),
    }
}

fn required(tree: &Value, path: &str) -> Result<String, String> {
    get_string(tree, path)?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format!("{path} is required"))
}

/// Distribution's `proxy` (every repository) and our `caches` (by prefix).
fn read_caches(tree: &Value, warnings: &mut Vec<String>) -> Result<Vec<ProxyConfig>, String> {
    let mut caches = Vec::new();
    if lookup(tree, "proxy").is_some_and(|v| !v.is_null()) {
        caches.push(read_upstream(tree, "proxy", String::new(), warnings)?);
    }
    match lookup(tree, "caches") {
        None | Some(Value::Null) => {}
        Some(Value::Sequence(list)) => {
            for (i, item) in list.iter().enumerate() {
                let at = format!("caches[{i}]");
                let Value::Mapping(m) = item else {
                    return Err(format!("{at} must be a mapping with prefix and remoteurl"));
                };
                for k in m.keys() {
                    let k = k.as_str().unwrap_or("");
                    if !["prefix", "remoteurl", "username", "password", "ttl"].contains(&k) {
                        return Err(format!(
                            "{at}: unknown key {k:?} (use prefix, remoteurl, username, password, ttl)"
                        ));
                    }
                }
                let mut wrapper = Mapping::new();
                wrapper.insert(Value::String(at.clone()), item.clone());
                let t = Value::Mapping(wrapper);
                let prefix = required(&t, &format!("{at}.prefix"))?;
                let name = prefix.strip_suffix('/').unwrap_or("");
                if name.is_empty() || name.parse::<crate::oci::RepoName>().is_err() {
                    return Err(format!(
                        "{at}.prefix {prefix:?} must be the start of repository names ending in '/', like hub/"
                    ));
                }
                if caches.iter().any(|c: &ProxyConfig| c.prefix == prefix) {
                    return Err(format!("{at}.prefix {prefix:?} is given twice"));
                }
                caches.push(read_upstream(&t, &at, prefix, warnings)?);
            }
        }
        Some(other) => return Err(format!("caches must be a list, not {}", show(other))),
    }
    Ok(caches)
}

/// One upstream's keys under `at` (`proxy`, or `caches[i]`).
fn read_upstream(
    tree: &Value,
    at: &str,
    prefix: String,
    warnings: &mut Vec<String>,
) -> Result<ProxyConfig, String> {
    let key = |k: &str| format!("{at}.{k}");
    let remoteurl = required(tree, &key("remoteurl"))?
        .trim_end_matches('/')
        .to_string();
    let rest = remoteurl
        .strip_prefix("https://")
        .or_else(|| remoteurl.strip_prefix("http://"))
        .ok_or_else(|| {
            format!("{at}.remoteurl {remoteurl:?} must start with https:// or http://")
        })?;
    if rest.is_empty() || rest.contains('/') {
        return Err(format!(
            "{at}.remoteurl {remoteurl:?}: give the upstream's scheme, host and port, without a path"
        ));
    }
    if rest.contains('@') {
        return Err(format!(
            "{at}.remoteurl: put credentials in {at}.username and {at}.password, not in the URL"
        ));
    }
    let username = get_string(tree, &key("username"))?.filter(|s| !s.is_empty());
    let password = get_string(tree, &key("password"))?.filter(|s| !s.is_empty());
    if username.is_some() != password.is_some() {
        return Err(format!("{at}.username and {at}.password go together"));
    }
    let ttl = get_duration(tree, &key("ttl"), Duration::ZERO)?;
    if ttl > Duration::from_secs(3600) {
        warnings.push(format!(
            "{at}.ttl {}: a tag is served from the cache for that long before the upstream is asked again (Distribution asks every time; ttl: 0 does too)",
            get_string(tree, &key("ttl"))?.unwrap_or_default()
        ));
    }
    Ok(ProxyConfig {
        prefix,
        remoteurl,
        username,
        password,
        ttl,
    })
}

/// A helper's error, named under `notifications.`.
fn in_notifications<T>(r: Result<T, String>) -> Result<T, String> {
    r.map_err(|e| format!("notifications.{e}"))
}

fn read_notifications(tree: &Value) -> Result<NotificationsConfig, String> {
    let endpoints = match lookup(tree, "notifications.endpoints") {
        None | Some(Value::Null) => return Ok(NotificationsConfig::default()),
        Some(Value::Sequence(list)) => list,
        Some(other) => {
            return Err(format!(
                "notifications.endpoints must be a list, not {}",
                show(other)
            ))
        }
    };
    const KEYS: [&str; 9] = [
        "name",
        "disabled",
        "url",
        "headers",
        "timeout",
        "threshold",
        "backoff",
        "ignoredmediatypes",
        "ignore",
    ];
    let mut out = Vec::new();
    for (i, ep) in endpoints.iter().enumerate() {
        let at = format!("endpoints[{i}]");
        let Value::Mapping(m) = ep else {
            return Err(format!(
                "notifications.{at} must be a mapping with name and url"
            ));
        };
        for k in m.keys() {
            let k = k.as_str().unwrap_or("");
            if !KEYS.contains(&k) {
                return Err(format!(
                    "notifications.{at}: unknown key {k:?} (known: {})",
                    KEYS.join(", ")
                ));
            }
        }
        // The endpoint as a tree of its own, so the helpers name its keys.
        let mut wrapper = Mapping::new();
        wrapper.insert(Value::String(at.clone()), ep.clone());
        let t = Value::Mapping(wrapper);
        let key = |k: &str| format!("{at}.{k}");
        let url = in_notifications(required(&t, &key("url")))?;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!(
                "notifications.{at}.url {url:?} must start with http:// or https://"
            ));
        }
        let mut headers = Vec::new();
        match lookup(&t, &key("headers")) {
            None | Some(Value::Null) => {}
            Some(Value::Mapping(h)) => {
                for (name, values) in h {
                    let name = name.as_str().unwrap_or("").to_string();
                    let path = format!("notifications.{at}.headers.{name}");
                    if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                        return Err(format!("{path}: not a header name"));
                    }
                    for v in get_strings(Some(values), &path)? {
                        if http::HeaderValue::from_str(&v).is_err() {
                            return Err(format!("{path}: {v:?} is not a header value"));
                        }
                        headers.push((name.clone(), v));
                    }
                }
            }
            Some(other) => {
                return Err(format!(
                    "notifications.{at}.headers must be a mapping of names to lists, not {}",
                    show(other)
                ))
            }
        }
        let threshold = match in_notifications(get_string(&t, &key("threshold")))? {
            None => 10,
            Some(s) => match s.parse::<i64>() {
                Ok(n) if n <= 0 => 10,
                Ok(n) => n.min(u32::MAX as i64) as u32,
                Err(_) => {
                    return Err(format!(
                        "notifications.{at}.threshold {s:?} must be a number"
                    ))
                }
            },
        };
        // Distribution: zero or less means the default.
        let positive = |d: Duration, default| if d.is_zero() { default } else { d };
        let mut ignored_media_types = get_strings(
            m.get("ignoredmediatypes"),
            &format!("notifications.{at}.ignoredmediatypes"),
        )?;
        let mut ignored_actions = Vec::new();
        match m.get("ignore") {
            None | Some(Value::Null) => {}
            Some(Value::Mapping(ig)) => {
                for (k, v) in ig {
                    let path = format!("notifications.{at}.ignore.{}", k.as_str().unwrap_or(""));
                    match k.as_str() {
                        Some("mediatypes") => {
                            ignored_media_types.extend(get_strings(Some(v), &path)?)
                        }
                        Some("actions") => {
                            for a in get_strings(Some(v), &path)? {
                                if !["push", "pull", "mount", "delete"].contains(&a.as_str()) {
                                    return Err(format!(
                                        "{path}: {a:?} is not push, pull, mount or delete"
                                    ));
                                }
                                ignored_actions.push(a);
                            }
                        }
                        _ => return Err(format!("{path}: unknown key (use mediatypes, actions)")),
                    }
                }
            }
            Some(other) => {
                return Err(format!(
                    "notifications.{at}.ignore must be a mapping, not {}",
                    show(other)
                ))
            }
        }
        out.push(EndpointConfig {
            name: in_notifications(get_string(&t, &key("name")))?
                .unwrap_or_else(|| format!("endpoint-{i}")),
            url,
            headers,
            timeout: positive(
                in_notifications(get_duration(&t, &key("timeout"), Duration::ZERO))?,
                Duration::from_secs(1),
            ),
            threshold,
            backoff: positive(
                in_notifications(get_duration(&t, &key("backoff"), Duration::ZERO))?,
                Duration::from_secs(1),
            ),
            ignored_media_types,
            ignored_actions,
            disabled: in_notifications(get_bool(&t, &key("disabled"), false))?,
        });
    }
    Ok(NotificationsConfig { endpoints: out })
}

fn read_auth(tree: &Value) -> Result<AuthConfig, String> {
    let anonymous = match lookup(tree, "auth.anonymous") {
        None => None,
        Some(_) => Some(get_bool(tree, "auth.anonymous", false)?),
    };
    let htpasswd = match lookup(tree, "auth.htpasswd") {
        None => None,
        Some(_) => Some(HtpasswdConfig {
            realm: get_string(tree, "auth.htpasswd.realm")?
                .unwrap_or_else(|| "Registry Realm".into()),
            path: PathBuf::from(required(tree, "auth.htpasswd.path")?),
        }),
    };
    let token = match lookup(tree, "auth.token") {
        None => None,
        Some(_) => Some(TokenConfig {
            realm: required(tree, "auth.token.realm")?,
            service: required(tree, "auth.token.service")?,
            issuer: required(tree, "auth.token.issuer")?,
            rootcertbundle: PathBuf::from(required(tree, "auth.token.rootcertbundle")?),
        }),
    };
    if htpasswd.is_some() && token.is_some() {
        return Err("auth: configure either htpasswd or token, not both".into());
    }
    if anonymous == Some(false) && htpasswd.is_none() && token.is_none() {
        return Err("auth.anonymous: false needs auth.htpasswd or auth.token".into());
    }
    let mut access = AccessConfig::default();
    if let Some(Value::Mapping(groups)) = lookup(tree, "access.groups") {
        for (k, v) in groups {
            let name = k
                .as_str()
                .ok_or_else(|| format!("access.groups: {} is not a group name", show(k)))?;
            access.groups.insert(
                name.to_string(),
                get_strings(Some(v), &format!("access.groups.{name}"))?,
            );
        }
    }
    match lookup(tree, "access.rules") {
        None => {}
        Some(Value::Sequence(rules)) => {
            for (i, rule) in rules.iter().enumerate() {
                let at = format!("access.rules[{i}]");
                let Value::Mapping(m) = rule else {
                    return Err(format!(
                        "{at} must be a mapping with repositories, users and actions"
                    ));
                };
                for k in m.keys() {
                    let k = k.as_str().unwrap_or("");
                    if !["repositories", "users", "actions"].contains(&k) {
                        return Err(format!(
                            "{at}: unknown key {k:?} (use repositories, users, actions)"
                        ));
                    }
                }
                let rule = AccessRule {
                    repositories: get_strings(
                        m.get("repositories"),
                        &format!("{at}.repositories"),
                    )?,
                    users: get_strings(m.get("users"), &format!("{at}.users"))?,
                    actions: get_strings(m.get("actions"), &format!("{at}.actions"))?,
                };
                for a in &rule.actions {
                    if !["pull", "push", "delete", "*"].contains(&a.as_str()) {
                        return Err(format!(
                            "{at}.actions: {a:?} is not pull, push, delete or *"
                        ));
                    }
                }
                for u in &rule.users {
                    if let Some(g) = u.strip_prefix('@') {
                        if !access.groups.contains_key(g) {
                            return Err(format!(
                                "{at}.users: group {g:?} is not defined in access.groups"
                            ));
                        }
                    }
                }
                if rule.repositories.is_empty() || rule.users.is_empty() || rule.actions.is_empty()
                {
                    return Err(format!("{at} needs repositories, users and actions"));
                }
                access.rules.push(rule);
            }
        }
        Some(other) => return Err(format!("access.rules must be a list, not {}", show(other))),
    }
    Ok(AuthConfig {
        anonymous,
        htpasswd,
        token,
        access,
    })
}

/// `storage.s3`, Distribution's keys. Settings whose value asks for what
/// this registry does not do (encryption with a KMS key, another storage
/// class, signature V2) stop the start with the key named.
fn read_s3(tree: &Value) -> Result<Option<S3Config>, String> {
    let Some(section) = lookup(tree, "storage.s3") else {
        return Ok(None);
    };
    if !section.is_mapping() {
        return Err("storage.s3 must be a mapping of keys".into());
    }
    let key = |k: &str| format!("storage.s3.{k}");
    let refuse = |k: &str, why: &str| Err(format!("'storage.s3.{k}': {why}"));
    if !get_bool(tree, &key("v4auth"), true)? {
        return refuse(
            "v4auth",
            "only AWS Signature Version 4 is implemented; remove v4auth: false",
        );
    }
    if get_bool(tree, &key("encrypt"), false)? {
        return refuse("encrypt", "server-side encryption is not implemented; use a bucket with default encryption instead");
    }
    if get_string(tree, &key("keyid"))?.is_some_and(|k| !k.is_empty()) {
        return refuse("keyid", "KMS encryption keys are not implemented");
    }
    if let Some(class) = get_string(tree, &key("storageclass"))? {
        if !["STANDARD", "NONE", ""].contains(&class.to_ascii_uppercase().as_str()) {
            return refuse(
                "storageclass",
                "only the bucket's default (STANDARD) storage class is implemented",
            );
        }
    }
    if let Some(acl) = get_string(tree, &key("objectacl"))? {
        if acl != "private" {
            return refuse("objectacl", "only private objects are written");
        }
    }
    for flag in ["usedualstack", "accelerate"] {
        if get_bool(tree, &key(flag), false)? {
            return refuse(
                flag,
                "is not implemented; give the endpoint in regionendpoint",
            );
        }
    }
    let accesskey = get_string(tree, &key("accesskey"))?.filter(|s| !s.is_empty());
    let secretkey = get_string(tree, &key("secretkey"))?.filter(|s| !s.is_empty());
    if accesskey.is_some() != secretkey.is_some() {
        return Err("storage.s3.accesskey and storage.s3.secretkey go together: give both, or neither to use the AWS environment".into());
    }
    let chunksize = match get_string(tree, &key("chunksize"))? {
        None => DEFAULT_CHUNK_SIZE,
        Some(s) => {
            let n = parse_size(&s).map_err(|e| format!("storage.s3.chunksize: {e}"))?;
            if n < MIN_CHUNK_SIZE as u64 || n > (5u64 << 30) {
                return Err(format!(
                    "storage.s3.chunksize {n} must be between 5 MiB ({MIN_CHUNK_SIZE}) and 5 GiB: S3's part sizes"
                ));
            }
            n as usize
        }
    };
    let regionendpoint = get_string(tree, &key("regionendpoint"))?.filter(|s| !s.is_empty());
    let rootdirectory = get_string(tree, &key("rootdirectory"))?.unwrap_or_default();
    if rootdirectory.split('/').any(|p| p == "." || p == "..") {
        return Err(format!(
            "storage.s3.rootdirectory {rootdirectory:?} must not hold . or .."
        ));
    }
    Ok(Some(S3Config {
        accesskey,
        secretkey,
        sessiontoken: get_string(tree, &key("sessiontoken"))?.filter(|s| !s.is_empty()),
        region: required(tree, &key("region"))?,
        // Distribution 2.8 always spoke path style to a regionendpoint.
        forcepathstyle: get_bool(tree, &key("forcepathstyle"), regionendpoint.is_some())?,
        regionendpoint,
        bucket: required(tree, &key("bucket"))?,
        secure: get_bool(tree, &key("secure"), true)?,
        skipverify: get_bool(tree, &key("skipverify"), false)?,
        rootdirectory,
        chunksize,
        redirect_disable: get_bool(tree, "storage.redirect.disable", false)?,
    }))
}

fn read_debug(tree: &Value) -> Result<Option<DebugConfig>, String> {
    let Some(addr) = get_string(tree, "http.debug.addr")?.filter(|a| !a.is_empty()) else {
        if lookup(tree, "http.debug.prometheus").is_some() {
            return Err(
                "http.debug.prometheus needs http.debug.addr, the address to serve it on".into(),
            );
        }
        return Ok(None);
    };
    // Distribution turns Prometheus off unless asked; here a debug address
    // exists to be scraped, so it is on unless `enabled: false`.
    let metrics_path = if get_bool(tree, "http.debug.prometheus.enabled", true)? {
        let path =
            get_string(tree, "http.debug.prometheus.path")?.unwrap_or_else(|| "/metrics".into());
        if !path.starts_with('/') {
            return Err(format!(
                "http.debug.prometheus.path {path:?} must start with '/'"
            ));
        }
        Some(path)
    } else {
        None
    };
    Ok(Some(DebugConfig { addr, metrics_path }))
}

fn read_tls(tree: &Value) -> Result<Option<TlsConfig>, String> {
    if lookup(tree, "http.tls").is_none() {
        return Ok(None);
    }
    let minimum = match get_string(tree, "http.tls.minimumtls")?.as_deref() {
        None | Some("tls1.2") | Some("") => TlsVersion::Tls12,
        Some("tls1.3") => TlsVersion::Tls13,
        Some("tls1.0") | Some("tls1.1") => {
            return Err(
                "http.tls.minimumtls: TLS 1.0 and 1.1 are not offered; use tls1.2 or tls1.3".into(),
            )
        }
        Some(other) => {
            return Err(format!(
                "http.tls.minimumtls {other:?} must be tls1.2 or tls1.3"
            ))
        }
    };
    Ok(Some(TlsConfig {
        certificate: PathBuf::from(required(tree, "http.tls.certificate")?),
        key: PathBuf::from(required(tree, "http.tls.key")?),
        clientcas: get_strings(lookup(tree, "http.tls.clientcas"), "http.tls.clientcas")?
            .into_iter()
            .map(PathBuf::from)
            .collect(),
        minimum,
    }))
}

fn show(v: &Value) -> String {
    yaml_serde::to_string(v)
        .map(|s| s.trim().replace('\n', " "))
        .unwrap_or_else(|_| "?".into())
}

/// A Go-style duration: `168h`, `10m`, `1h30m`, `500ms`, `30s`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let err = || format!("{s:?} is not a duration (use forms like 30s, 10m, 24h, 1h30m)");
    if s.is_empty() {
        return Err(err());
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(err)?;
        if num_end == 0 {
            return Err(err());
        }
        let n: f64 = rest[..num_end].parse().map_err(|_| err())?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let secs = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            _ => return Err(err()),
        };
        total += Duration::from_secs_f64(n * secs);
        rest = &rest[unit_end..];
    }
    Ok(total)
}

/// A size such as `4MiB`, `512KiB`, `1GB` or a plain number of bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let n: u64 = s[..split]
        .parse()
        .map_err(|_| format!("{s:?} is not a size (use forms like 4MiB, 512KiB, 1048576)"))?;
    let mult: u64 = match s[split..].trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?} in {s:?}")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

fn normalize_addr(raw: &str, warnings: &mut Vec<String>) -> Result<String, String> {
    let raw = raw.trim();
    if raw.chars().all(|c| c.is_ascii_digit()) && !raw.is_empty() {
        warnings.push(format!(
            "http.addr: {raw} is read as port {raw} on all interfaces; the usual form is ':{raw}' (or '127.0.0.1:{raw}' for this machine only)"
        ));
        return Ok(format!("0.0.0.0:{raw}"));
    }
    let (host, port) = raw
        .rsplit_once(':')
        .ok_or_else(|| format!("http.addr {raw:?} must be host:port or :port"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("http.addr {raw:?}: {port:?} is not a port number"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Ok(if host.is_empty() {
        format!("0.0.0.0:{port}")
    } else if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    })
}

fn read_config(tree: &Value, mut warnings: Vec<String>) -> Result<Config, String> {
    if let Some(v) = get_string(tree, "version")? {
        if v != "0.1" {
            return Err(format!("version {v:?} is not supported; use version: 0.1"));
        }
    }

    let level_text = get_string(tree, "log.level")?
        .or(get_string(tree, "loglevel")?)
        .unwrap_or_else(|| "info".into());
    let level = match level_text.to_ascii_lowercase().as_str() {
        "panic" | "fatal" | "error" => LogLevel::Error,
        "warn" | "warning" => LogLevel::Warn,
        "info" => LogLevel::Info,
        "debug" => LogLevel::Debug,
        "trace" => LogLevel::Trace,
        other => {
            return Err(format!(
                "log.level {other:?} is not a level (error, warn, info, debug)"
            ))
        }
    };
    let formatter = match get_string(tree, "log.formatter")?.as_deref() {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some("logstash") => {
            warnings.push("log.formatter logstash is written as json".into());
            LogFormat::Json
        }
        Some(other) => return Err(format!("log.formatter {other:?} must be text or json")),
    };
    let mut fields = BTreeMap::new();
    if let Some(Value::Mapping(m)) = lookup(tree, "log.fields") {
        for (k, v) in m {
            let key = k.as_str().map(str::to_string).unwrap_or_else(|| show(k));
            let val = v.as_str().map(str::to_string).unwrap_or_else(|| show(v));
            fields.insert(key, val);
        }
    }
    let log = LogConfig {
        level,
        formatter,
        fields,
        accesslog: !get_bool(tree, "log.accesslog.disabled", false)?,
    };

    let rootdirectory = get_string(tree, "storage.filesystem.rootdirectory")?
        .unwrap_or_else(|| "/var/lib/registry".into());
    if rootdirectory.is_empty() {
        return Err("storage.filesystem.rootdirectory must not be empty".into());
    }
    let s3 = read_s3(tree)?;
    if s3.is_some() && lookup(tree, "storage.filesystem").is_some() {
        return Err(
            "storage: both filesystem and s3 are configured; keep the one the registry uses".into(),
        );
    }
    let storage = StorageConfig {
        s3,
        rootdirectory: PathBuf::from(rootdirectory),
        directwrites: get_bool(tree, "storage.filesystem.directwrites", true)?,
        uploadmemory: get_size_within(
            tree,
            "storage.filesystem.uploadmemory",
            crate::storage::DEFAULT_UPLOAD_MEMORY as u64,
            (2 << 20, "2MiB"),
            (64 << 30, "64GiB"),
        )? as usize,
        delete_enabled: get_bool(tree, "storage.delete.enabled", false)?,
        readonly: get_bool(tree, "storage.maintenance.readonly.enabled", false)?,
        uploadpurging: UploadPurging {
            enabled: get_bool(tree, "storage.maintenance.uploadpurging.enabled", true)?,
            age: get_duration(
                tree,
                "storage.maintenance.uploadpurging.age",
                Duration::from_secs(168 * 3600),
            )?,
            interval: get_duration(
                tree,
                "storage.maintenance.uploadpurging.interval",
                Duration::from_secs(24 * 3600),
            )?,
            dryrun: get_bool(tree, "storage.maintenance.uploadpurging.dryrun", false)?,
        },
    };
    if storage.uploadpurging.enabled && storage.uploadpurging.interval.is_zero() {
        return Err("storage.maintenance.uploadpurging.interval must be greater than zero".into());
    }

    let addr = match lookup(tree, "http.addr") {
        None => "0.0.0.0:5000".to_string(),
        Some(Value::Number(n)) => normalize_addr(&n.to_string(), &mut warnings)?,
        Some(Value::String(s)) => normalize_addr(s, &mut warnings)?,
        Some(other) => return Err(format!("http.addr must be host:port, not {}", show(other))),
    };
    match get_string(tree, "http.net")?.as_deref() {
        None | Some("tcp") | Some("") => {}
        Some(other) => {
            return Err(format!(
                "http.net {other:?} is not supported; only tcp is implemented"
            ))
        }
    }
    let mut prefix = get_string(tree, "http.prefix")?.unwrap_or_else(|| "/".into());
    if !prefix.starts_with('/') {
        prefix.insert(0, '/');
    }
    if !prefix.ends_with('/') {
        prefix.push('/');
    }
    let host = get_string(tree, "http.host")?
        .filter(|h| !h.is_empty())
        .map(|h| h.trim_end_matches('/').to_string());
    if let Some(h) = &host {
        if !(h.starts_with("http://") || h.starts_with("https://")) {
            return Err(format!(
                "http.host {h:?} must be a full URL such as https://registry.example.com"
            ));
        }
    }
    let mut headers = Vec::new();
    if let Some(Value::Mapping(m)) = lookup(tree, "http.headers") {
        for (k, v) in m {
            let name = k
                .as_str()
                .ok_or_else(|| format!("http.headers: header name {} must be text", show(k)))?;
            http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("http.headers: {name:?} is not a valid header name"))?;
            let values: Vec<String> = match v {
                Value::Sequence(items) => items
                    .iter()
                    .map(|i| i.as_str().map(str::to_string).unwrap_or_else(|| show(i)))
                    .collect(),
                Value::Null => vec![],
                other => vec![other
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| show(other))],
            };
            for value in values {
                http::HeaderValue::from_str(&value).map_err(|_| {
                    format!("http.headers.{name}: {value:?} is not a valid header value")
                })?;
                headers.push((name.to_string(), value));
            }
        }
    }
    let max_manifest_bytes = match get_string(tree, "http.maxmanifestsize")? {
        None => DEFAULT_MAX_MANIFEST_BYTES,
        Some(s) => parse_size(&s).map_err(|e| format!("http.maxmanifestsize: {e}"))?,
    };
    let http = HttpConfig {
        addr,
        prefix,
        host,
        relativeurls: get_bool(tree, "http.relativeurls", false)?,
        headers,
        max_manifest_bytes,
        tls: read_tls(tree)?,
        max_connections: get_count(tree, "http.maxconnections", 4096)?,
        max_header_bytes: get_size_within(
            tree,
            "http.maxheaderbytes",
            64 << 10,
            (8192, "8KiB"),
            (16 << 20, "16MiB"),
        )? as usize,
        header_timeout: get_duration(tree, "http.headertimeout", Duration::from_secs(30))?,
        sendfile: get_bool(tree, "http.sendfile", true)?,
        debug: read_debug(tree)?,
        secret: get_string(tree, "http.secret")?.filter(|s| !s.is_empty()),
    };

    let auth = read_auth(tree)?;
    let maxentries = match get_string(tree, "catalog.maxentries")? {
        None => 1000,
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("catalog.maxentries {s:?} must be a positive number"))?,
    };

    Ok(Config {
        log,
        storage,
        http,
        auth,
        catalog: CatalogConfig { maxentries },
        ui: UiConfig {
            enabled: get_bool(tree, "ui.enabled", true)?,
        },
        notifications: read_notifications(tree)?,
        caches: read_caches(tree, &mut warnings)?,
        warnings,
    })
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_yaml("config.yml", text, std::iter::empty())
    }

    fn parse_env(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_yaml(
            "config.yml",
            text,
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    const TUTORIAL: &str = "version: 0.1
  log:
    level: debug
  storage:
    filesystem:
      rootdirectory: /opt/software/dockerRegistry
    delete:
      enabled: true
  http:
    addr: 5000
    headers:
      X-Content-Type-Options: [nosniff]
  auth:
    anonymous: true
";

    #[test]
    fn shipped_config_parses() {
        let text = include_str!("../config.yml");
        let c = parse(text).unwrap();
        assert_eq!(c.http.addr, "127.0.0.1:5000");
        assert_eq!(c.storage.rootdirectory, PathBuf::from("./data"));
        assert!(c.storage.delete_enabled);
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn registry_2_image_default_config_parses() {
        // /etc/docker/registry/config.yml as the registry:2 image ships it.
        let text = "version: 0.1
log:
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: /var/lib/registry
http:
  addr: :5000
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
";
        let c = parse(text).unwrap();
        assert_eq!(c.http.addr, "0.0.0.0:5000");
        assert_eq!(c.storage.rootdirectory, PathBuf::from("/var/lib/registry"));
        assert_eq!(
            c.log.fields.get("service").map(String::as_str),
            Some("registry")
        );
        assert!(!c.storage.delete_enabled);
        let warned: Vec<_> = c
            .warnings
            .iter()
            .filter(|w| w.contains("does not implement"))
            .collect();
        assert_eq!(warned.len(), 2, "{warned:?}");
        assert!(warned[0].contains("'storage.cache'") && warned[1].contains("'health'"));
    }

    #[test]
    fn tutorial_misindentation_names_the_line() {
        let err = parse(TUTORIAL).unwrap_err().to_string();
        assert!(
            err.starts_with("config.yml line 2: 'log:' is indented under line 1 ('version: 0.1')"),
            "{err}"
        );
        assert!(!err.contains("mapping values are not allowed"), "{err}");
    }

    #[test]
    fn tutorial_fixed_means_port_5000_everywhere_and_open_access() {
        let fixed: String = TUTORIAL
            .lines()
            .map(|l| l.strip_prefix("  ").unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n");
        let c = parse(&fixed).unwrap();
        assert_eq!(c.http.addr, "0.0.0.0:5000");
        assert!(
            c.warnings.iter().any(|w| w.contains("':5000'")),
            "{:?}",
            c.warnings
        );
        assert_eq!(c.auth.anonymous, Some(true));
        assert_eq!(c.log.level, LogLevel::Debug);
        assert!(c.storage.delete_enabled);
        assert_eq!(
            c.http.headers,
            vec![("X-Content-Type-Options".to_string(), "nosniff".to_string())]
        );
    }

    #[test]
    fn other_syntax_errors_give_line() {
        let err = parse("http:\n  addr: [1, 2\n").unwrap_err().to_string();
        assert!(err.starts_with("config.yml line "), "{err}");
    }

    #[test]
    fn unknown_key_is_in_notifications() {
        let err = parse("version: 0.1\nhttp:\n  adr: :5000\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown configuration key 'http.adr'"),
            "{err}"
        );
        let err = parse("storag:\n  delete: {}\n").unwrap_err().to_string();
        assert!(err.contains("'storag'"), "{err}");
    }

    #[test]
    fn notification_endpoints_read_as_distribution_writes_them() {
        let c = parse(
            "notifications:
  events:
    includereferences: true
  endpoints:
    - name: alistener
      disabled: false
      url: https://my.listener.com/event
      headers:
        Authorization: [Bearer <token>]
        X-Two: [a, b]
      timeout: 500ms
      threshold: 5
      backoff: 1s
      ignoredmediatypes:
        - application/octet-stream
      ignore:
        mediatypes:
           - application/vnd.docker.image.rootfs.diff.tar.gzip
        actions:
           - pull
    - url: http://h:1/x
      threshold: 0
",
        )
        .unwrap();
        let e = &c.notifications.endpoints;
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].name, "alistener");
        assert_eq!(
            e[0].headers,
            [
                ("Authorization".to_string(), "Bearer <token>".to_string()),
                ("X-Two".into(), "a".into()),
                ("X-Two".into(), "b".into())
            ]
        );
        assert_eq!(e[0].timeout, Duration::from_millis(500));
        assert_eq!((e[0].threshold, e[0].backoff), (5, Duration::from_secs(1)));
        assert_eq!(
            e[0].ignored_media_types,
            [
                "application/octet-stream",
                "application/vnd.docker.image.rootfs.diff.tar.gzip"
            ]
        );
        assert_eq!(e[0].ignored_actions, ["pull"]);
        // Distribution's defaults, and a name when none is given.
        assert_eq!(e[1].name, "endpoint-1");
        assert_eq!(
            (e[1].timeout, e[1].threshold, e[1].backoff),
            (Duration::from_secs(1), 10, Duration::from_secs(1))
        );
        assert!(c
            .warnings
            .iter()
            .any(|w| w.contains("'notifications.events.includereferences'")));
    }

    #[test]
    fn a_cache_from_distribution_s_environment_variables() {
        let c = parse_env(
            "version: 0.1\n",
            &[
                ("REGISTRY_PROXY_REMOTEURL", "https://registry-1.docker.io"),
                ("REGISTRY_PROXY_USERNAME", "me"),
                ("REGISTRY_PROXY_PASSWORD", "token"),
                ("REGISTRY_PROXY_TTL", "5m"),
            ],
        )
        .unwrap();
        assert_eq!(
            c.caches,
            [ProxyConfig {
                prefix: String::new(),
                remoteurl: "https://registry-1.docker.io".into(),
                username: Some("me".into()),
                password: Some("token".into()),
                ttl: Duration::from_secs(300),
            }]
        );
        let week = parse("proxy:\n  remoteurl: http://h:1\n  ttl: 168h\n").unwrap();
        assert!(week.warnings.iter().any(|w| w.contains("proxy.ttl 168h")));
        assert!(parse("proxy:\n  remoteurl: http://u:p@h:1\n")
            .unwrap_err()
            .to_string()
            .contains("not in the URL"));
    }

    #[test]
    fn unimplemented_key_warns_by_name() {
        let c = parse("redis:\n  addr: x\nhttp:\n  secret: x\n  draintimeout: 5s\n").unwrap();
        assert_eq!(c.http.secret.as_deref(), Some("x"));
        assert!(c.warnings.iter().any(|w| w.contains("'redis'")));
        assert!(c.warnings.iter().any(|w| w.contains("'http.draintimeout'")));
        assert!(!c.warnings.iter().any(|w| w.contains("'http.secret'")));
        assert!(c.ui.enabled, "the page is on unless turned off");
        assert!(!parse("ui:\n  enabled: false\n").unwrap().ui.enabled);
    }

    #[test]
    fn auth_and_tls_sections() {
        let c = parse(
            "auth:\n  htpasswd:\n    realm: r\n    path: /etc/htpasswd\n  anonymous: true\nhttp:\n  tls:\n    certificate: /c\n    key: /k\n    clientcas: [/ca1, /ca2]\n    minimumtls: tls1.3\naccess:\n  groups:\n    ci: [bot, alice]\n  rules:\n    - repositories: [\"team-a/*\"]\n      users: [\"@ci\"]\n      actions: [pull, push]\n",
        )
        .unwrap();
        let h = c.auth.htpasswd.unwrap();
        assert_eq!(
            (h.realm.as_str(), h.path),
            ("r", PathBuf::from("/etc/htpasswd"))
        );
        assert_eq!(c.auth.anonymous, Some(true));
        let tls = c.http.tls.unwrap();
        assert_eq!(tls.clientcas.len(), 2);
        assert_eq!(tls.minimum, TlsVersion::Tls13);
        assert_eq!(c.auth.access.groups["ci"], vec!["bot", "alice"]);
        assert_eq!(c.auth.access.rules[0].actions, vec!["pull", "push"]);
        let bad = [
            ("auth:\n  htpasswd:\n    realm: r\n", "auth.htpasswd.path is required"),
            ("auth:\n  silly: {}\n", "auth.silly"),
            ("auth:\n  anonymous: false\n", "needs auth.htpasswd or auth.token"),
            ("http:\n  tls:\n    certificate: /c\n", "http.tls.key is required"),
            ("http:\n  tls:\n    certificate: /c\n    key: /k\n    minimumtls: tls1.0\n", "minimumtls"),
            ("access:\n  rules:\n    - repositories: [a]\n      users: [\"@nope\"]\n      actions: [pull]\n", "group \"nope\""),
            ("access:\n  rules:\n    - repositories: [a]\n      users: [x]\n      actions: [write]\n", "\"write\" is not pull"),
            ("access:\n  rules:\n    - repos: [a]\n", "unknown key \"repos\""),
        ];
        for (text, want) in bad {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn env_overrides() {
        let c = parse_env(
            "storage:\n  filesystem:\n    rootdirectory: /a\n",
            &[
                ("REGISTRY_HTTP_ADDR", "127.0.0.1:6000"),
                ("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", "/b"),
                ("REGISTRY_STORAGE_DELETE_ENABLED", "true"),
                ("REGISTRY_LOG_LEVEL", "debug"),
                ("REGISTRY_LOG_FIELDS_SERVICE", "registry"),
                ("REGISTRY_CATALOG_MAXENTRIES", "50"),
                ("REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING_AGE", "2h"),
                ("REGISTRY_PORT_5000_TCP", "tcp://10.0.0.1:5000"),
            ],
        )
        .unwrap();
        assert_eq!(c.http.addr, "127.0.0.1:6000");
        assert_eq!(c.storage.rootdirectory, PathBuf::from("/b"));
        assert!(c.storage.delete_enabled);
        assert_eq!(c.log.level, LogLevel::Debug);
        assert_eq!(
            c.log.fields.get("service").map(String::as_str),
            Some("registry")
        );
        assert_eq!(c.catalog.maxentries, 50);
        assert_eq!(c.storage.uploadpurging.age, Duration::from_secs(7200));
        assert!(c
            .warnings
            .iter()
            .any(|w| w.contains("REGISTRY_PORT_5000_TCP")));
    }

    #[test]
    fn env_selects_driver() {
        let c = parse_env("", &[("REGISTRY_STORAGE", "filesystem")]).unwrap();
        assert_eq!(c.storage.rootdirectory, PathBuf::from("/var/lib/registry"));
        let err = parse_env(
            "",
            &[
                ("REGISTRY_AUTH", "htpasswd"),
                ("REGISTRY_AUTH_HTPASSWD_REALM", "r"),
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("auth.htpasswd"), "{err}");
    }

    #[test]
    fn s3_as_distribution_writes_it() {
        let text = "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: /d\n";
        // REGISTRY_STORAGE=s3 selects the driver and drops the file's filesystem.
        let c = parse_env(
            text,
            &[
                ("REGISTRY_STORAGE", "s3"),
                ("REGISTRY_STORAGE_S3_BUCKET", "images"),
                ("REGISTRY_STORAGE_S3_REGION", "eu-west-1"),
                ("REGISTRY_STORAGE_S3_REGIONENDPOINT", "minio.local:9000"),
                ("REGISTRY_STORAGE_S3_SECURE", "false"),
                ("REGISTRY_STORAGE_S3_CHUNKSIZE", "16777216"),
                ("REGISTRY_STORAGE_S3_ROOTDIRECTORY", "/reg"),
                ("REGISTRY_STORAGE_REDIRECT_DISABLE", "true"),
            ],
        )
        .unwrap();
        let s3 = c.storage.s3.expect("s3 selected");
        assert_eq!(s3.bucket, "images");
        assert_eq!(s3.region, "eu-west-1");
        assert_eq!(s3.root_key(), "reg");
        assert_eq!(s3.chunksize, 16 << 20);
        assert!(s3.forcepathstyle, "path style to a regionendpoint, as 2.8");
        assert!(!s3.secure && s3.redirect_disable);
        assert_eq!((s3.accesskey, s3.secretkey), (None, None));

        let base = "version: 0.1\nstorage:\n  s3:\n    region: r\n    bucket: b\n";
        for (extra, named) in [
            ("    accesskey: a\n", "secretkey"),
            ("    chunksize: 1024\n", "storage.s3.chunksize"),
            ("    objectacl: public-read\n", "storage.s3.objectacl"),
            ("    keyid: k\n", "storage.s3.keyid"),
            ("    rootdirectory: /a/../b\n", "storage.s3.rootdirectory"),
        ] {
            let err = parse(&format!("{base}{extra}")).unwrap_err().to_string();
            assert!(err.contains(named), "{named} not in {err}");
        }
        let err = parse("version: 0.1\nstorage:\n  s3:\n    region: r\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("storage.s3.bucket is required"), "{err}");
        let both = format!("{base}  filesystem:\n    rootdirectory: /x\n");
        assert!(parse(&both).unwrap_err().to_string().contains("both"));
    }

    #[test]
    fn bad_values_are_in_notifications() {
        let cases = [
            (
                "storage:\n  delete:\n    enabled: maybe\n",
                "storage.delete.enabled",
            ),
            ("http:\n  addr: nope\n", "http.addr"),
            ("log:\n  level: loud\n", "log.level"),
            ("catalog:\n  maxentries: -1\n", "catalog.maxentries"),
            (
                "storage:\n  maintenance:\n    uploadpurging:\n      age: soon\n",
                "storage.maintenance.uploadpurging.age",
            ),
            ("version: 2\n", "version"),
            (
                "http:\n  debug:\n    prometheus:\n      enabled: true\n",
                "http.debug.addr",
            ),
            (
                "http:\n  debug:\n    addr: :5001\n    prometheus:\n      path: metrics\n",
                "http.debug.prometheus.path",
            ),
        ];
        for (text, key) in cases {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(
            parse_duration("168h").unwrap(),
            Duration::from_secs(168 * 3600)
        );
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("h").is_err());
        assert_eq!(parse_size("4MiB").unwrap(), 4 << 20);
        assert_eq!(parse_size("100").unwrap(), 100);
        assert!(parse_size("4 parsecs").is_err());
    }

    #[test]
    fn prefix_and_host() {
        let c = parse("http:\n  prefix: registry\n  host: https://r.example.com/\n").unwrap();
        assert_eq!(c.http.prefix, "/registry/");
        assert_eq!(c.http.host.as_deref(), Some("https://r.example.com"));
        assert!(parse("http:\n  host: r.example.com\n").is_err());
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// YAML-ish text made of the keys a config has, so that parsing goes
    /// past the first line.
    fn config_text() -> impl Strategy<Value = String> {
        let key = prop_oneof![
            Just("version"),
            Just("storage"),
            Just("filesystem"),
            Just("rootdirectory"),
            Just("s3"),
            Just("bucket"),
            Just("http"),
            Just("addr"),
            Just("tls"),
            Just("auth"),
            Just("htpasswd"),
            Just("token"),
            Just("log"),
            Just("level"),
            Just("proxy"),
            Just("notifications"),
            Just("endpoints"),
            Just("delete"),
            Just("enabled"),
            Just("maintenance"),
            Just("uploadpurging"),
            Just("caches"),
            Just("headers"),
        ];
        let value = prop_oneof![
            Just(String::new()),
            "[a-z0-9:/._-]{0,12}",
            Just("true".to_string()),
            Just("[]".to_string()),
            Just("{}".to_string()),
            "-?[0-9]{1,12}[smhkKMG]?",
        ];
        proptest::collection::vec((0usize..4, key, value), 0..16).prop_map(|lines| {
            lines
                .into_iter()
                .map(|(indent, k, v)| format!("{}{k}: {v}\n", "  ".repeat(indent)))
                .collect()
        })
    }

    proptest! {
        #[test]
        fn any_text_loads_or_is_refused(text in prop_oneof!["\\PC{0,200}", config_text()]) {
            let _ = Config::from_yaml("config.yml", &text, Vec::<(String, String)>::new());
        }

        #[test]
        fn any_environment_loads_or_is_refused(
            env in proptest::collection::vec(
                ("REGISTRY_[A-Z_]{1,30}", "\\PC{0,20}"),
                0..6,
            ),
        ) {
            let text = "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: /var/lib/registry\n";
            let _ = Config::from_yaml("config.yml", text, env);
        }

        #[test]
        fn durations_and_sizes_parse_or_are_refused(s in "\\PC{0,20}") {
            let _ = parse_duration(&s);
            let _ = parse_size(&s);
        }

        #[test]
        fn durations_read_back(h in 0u64..1000, m in 0u64..60, s in 0u64..60) {
            let text = format!("{h}h{m}m{s}s");
            prop_assert_eq!(parse_duration(&text), Ok(Duration::from_secs(h * 3600 + m * 60 + s)));
        }
    }
}
