//! REPLICATION.yml: the peers (registries, or a store on disk) and the
//! rules that copy repositories from one to another. Unknown keys and bad
//! values are refused at start with the key named.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use serde::Deserialize;

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub peers: BTreeMap<String, PeerConfig>,
    pub rules: Vec<RuleConfig>,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// `http://host:port` or `https://host:port`.
    pub url: Option<String>,
    /// A registry store on this machine (Distribution's layout), read
    /// straight from disk; a source only.
    pub path: Option<PathBuf>,
    /// A registry's config.yml: the store its `storage` section names (a
    /// directory, or a bucket with `storage.s3`), read straight from
    /// storage; a source only.
    pub registry_config: Option<PathBuf>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// A file whose first line is the password.
    pub password_file: Option<PathBuf>,
    /// PEM roots for https (default: the system's bundle).
    pub ca: Option<PathBuf>,
    /// Requests in flight to this peer at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Blob bytes per second to or from this peer, as `50MiB`; none: no limit.
    pub bandwidth: Option<String>,
    /// How long one request to this peer is tried again after no answer
    /// or a busy one (429, 5xx), as `30s` or `5m` (default 2m); a blob's
    /// transfer gets this long again whenever bytes move.
    pub retry_for: Option<String>,
}

fn default_concurrency() -> usize {
    4
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub name: Option<String>,
    pub source: String,
    pub target: String,
    #[serde(default)]
    pub repositories: Patterns,
    #[serde(default)]
    pub tags: Patterns,
    /// Prepended to each repository name on the target.
    #[serde(default)]
    pub prefix: String,
    /// How often the daemon runs this rule, as `30s`, `5m`, `1h`.
    #[serde(default = "default_interval")]
    pub interval: String,
    /// Delete from the target the tags the source no longer has (within
    /// the rule's repositories and tag patterns).
    #[serde(default)]
    pub deletes: bool,
}

fn default_interval() -> String {
    "5m".into()
}

/// Globs (`*` matches any run of characters, `/` included).
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct Patterns {
    #[serde(default = "everything")]
    pub include: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
}

fn everything() -> Vec<String> {
    vec!["*".into()]
}

impl Default for Patterns {
    fn default() -> Self {
        Patterns {
            include: everything(),
            exclude: vec![],
        }
    }
}

impl Patterns {
    pub fn admits(&self, name: &str) -> bool {
        use registry::auth::access::glob;
        self.include.iter().any(|p| glob(p, name)) && !self.exclude.iter().any(|p| glob(p, name))
    }
}

/// A checked rule, ready to run.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub source: String,
    pub target: String,
    pub repositories: Patterns,
    pub tags: Patterns,
    pub prefix: String,
    pub interval: Duration,
    pub deletes: bool,
}

pub struct Config {
    pub peers: BTreeMap<String, PeerConfig>,
    pub rules: Vec<Rule>,
}

impl Config {
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Config::parse(&text).with_context(|| format!("{}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Config> {
        let file: File = yaml_serde::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        if file.peers.is_empty() {
            bail!("peers: name at least two registries");
        }
        for (name, p) in &file.peers {
            let given = [
                p.url.is_some(),
                p.path.is_some(),
                p.registry_config.is_some(),
            ];
            match given.iter().filter(|g| **g).count() {
                0 => bail!(
                    "peers.{name}: give url (a registry), path (a store on disk) or \
                     registry_config (a registry's config.yml, whose store is read)"
                ),
                1 => {}
                _ => bail!("peers.{name}: give one of url, path and registry_config"),
            }
            if let Some(url) = &p.url {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    bail!("peers.{name}.url: {url:?} must start with http:// or https://")
                }
            }
            if p.password.is_some() && p.password_file.is_some() {
                bail!("peers.{name}: give password or password_file, not both");
            }
            if (p.password.is_some() || p.password_file.is_some()) && p.username.is_none() {
                bail!("peers.{name}: a password needs username");
            }
            if let Some(b) = &p.bandwidth {
                match registry::config::parse_size(b) {
                    Ok(n) if n >= 1024 => {}
                    Ok(_) => bail!("peers.{name}.bandwidth: {b:?} is below 1KiB per second"),
                    Err(e) => bail!("peers.{name}.bandwidth: {e}"),
                }
            }
            p.retry_for()
                .map_err(|e| anyhow::anyhow!("peers.{name}.retry_for: {e}"))?;
            if p.concurrency == 0 || p.concurrency > 256 {
                bail!(
                    "peers.{name}.concurrency: {} must be from 1 to 256",
                    p.concurrency
                );
            }
        }
        if file.rules.is_empty() {
            bail!("rules: give at least one rule");
        }
        let mut rules = vec![];
        for (i, r) in file.rules.iter().enumerate() {
            let at = format!("rules[{i}]");
            for (key, peer) in [("source", &r.source), ("target", &r.target)] {
                if !file.peers.contains_key(peer) {
                    bail!("{at}.{key}: no peer named {peer:?} under peers");
                }
            }
            if r.source == r.target {
                bail!("{at}: source and target are the same peer ({:?})", r.source);
            }
            if file.peers[&r.target].url.is_none() {
                bail!(
                    "{at}.target: {:?} is a store read from storage, which can only be a source",
                    r.target
                );
            }
            if !r.prefix.is_empty()
                && format!("{}x", r.prefix)
                    .parse::<registry::oci::RepoName>()
                    .is_err()
            {
                bail!("{at}.prefix: {:?} cannot start a repository name", r.prefix);
            }
            let interval = registry::config::parse_duration(&r.interval)
                .map_err(|e| anyhow::anyhow!("{at}.interval: {e}"))?;
            if interval < Duration::from_secs(1) {
                bail!("{at}.interval: at least 1s");
            }
            rules.push(Rule {
                name: r
                    .name
                    .clone()
                    .unwrap_or_else(|| format!("{}->{}", r.source, r.target)),
                source: r.source.clone(),
                target: r.target.clone(),
                repositories: r.repositories.clone(),
                tags: r.tags.clone(),
                prefix: r.prefix.clone(),
                interval,
                deletes: r.deletes,
            });
        }
        Ok(Config {
            peers: file.peers,
            rules,
        })
    }
}

impl PeerConfig {
    /// How long a request to this peer is retried.
    pub fn retry_for(&self) -> anyhow::Result<Duration> {
        match &self.retry_for {
            None => Ok(crate::retry::DEFAULT_RETRY_FOR),
            Some(d) => registry::config::parse_duration(d).map_err(|e| anyhow::anyhow!("{e}")),
        }
    }

    /// Bytes per second, if limited (checked when loading).
    pub fn bytes_per_sec(&self) -> Option<u64> {
        self.bandwidth
            .as_deref()
            .and_then(|b| registry::config::parse_size(b).ok())
    }

    pub fn credentials(&self, name: &str) -> anyhow::Result<Option<(String, String)>> {
        let Some(user) = &self.username else {
            return Ok(None);
        };
        let password = match (&self.password, &self.password_file) {
            (Some(p), _) => p.clone(),
            (None, Some(f)) => std::fs::read_to_string(f)
                .with_context(|| {
                    format!("peers.{name}.password_file: cannot read {}", f.display())
                })?
                .lines()
                .next()
                .unwrap_or("")
                .to_string(),
            (None, None) => String::new(),
        };
        Ok(Some((user.clone(), password)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_key() {
        let peers =
            "peers:\n  a:\n    url: http://127.0.0.1:1\n  b:\n    url: http://127.0.0.1:2\n";
        for (text, needle) in [
            (format!("{peers}rules:\n  - source: a\n    target: c\n"), "rules[0].target: no peer named \"c\""),
            (format!("{peers}rules:\n  - source: a\n    target: b\n    interval: soon\n"), "rules[0].interval"),
            (format!("{peers}rules:\n  - source: a\n    target: b\n    colour: red\n"), "unknown field `colour`"),
            (format!("{peers}rules:\n  - source: a\n    target: a\n"), "same peer"),
            ("peers:\n  a:\n    url: http://h:1\n    retry_for: a while\n  b:\n    url: http://h:2\nrules:\n  - source: a\n    target: b\n".to_string(), "peers.a.retry_for"),
            ("peers:\n  a:\n    url: ftp://x\nrules: []\n".to_string(), "peers.a.url"),
            ("peers:\n  a:\n    path: /x\n  b:\n    url: http://h:1\nrules:\n  - source: b\n    target: a\n".to_string(), "can only be a source"),
        ] {
            let err = format!("{:#}", Config::parse(&text).err().unwrap_or_else(|| panic!("accepted: {text}")));
            assert!(err.contains(needle), "{text}\n=> {err}");
        }
    }

    #[test]
    fn patterns_include_then_exclude() {
        let p = Patterns {
            include: vec!["apps/*".into()],
            exclude: vec!["apps/tmp-*".into()],
        };
        assert!(p.admits("apps/web"));
        assert!(!p.admits("apps/tmp-1"));
        assert!(!p.admits("base/alpine"));
        assert!(Patterns::default().admits("anything/at/all"));
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_text_loads_or_is_refused(text in prop_oneof![
            "\\PC{0,200}",
            proptest::collection::vec(
                (0usize..4, prop_oneof![
                    Just("peers"), Just("rules"), Just("a"), Just("b"), Just("url"),
                    Just("source"), Just("target"), Just("interval"), Just("retry_for"),
                    Just("bandwidth"), Just("concurrency"), Just("- source"), Just("prefix"),
                    Just("repositories"), Just("include"), Just("tags"),
                ], "[a-z0-9:/.*_-]{0,12}"),
                0..14,
            ).prop_map(|l| l.into_iter().map(|(i, k, v)| format!("{}{k}: {v}\n", "  ".repeat(i))).collect()),
        ]) {
            let _ = Config::parse(&text);
        }
    }
}
