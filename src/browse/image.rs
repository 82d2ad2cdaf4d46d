//! What people want to know about an image: its platforms, sizes, layers
//! and config (created, entrypoint, environment, labels, history), and what
//! refers to it. Read from the manifests of one repository and their small
//! config blobs; summaries are kept by digest, which never changes meaning.

use std::collections::BTreeMap;
use std::sync::Arc;

use dashmap::DashMap;
use serde::Deserialize;

use crate::oci::{Descriptor, Digest, Manifest, Reference, RepoName};
use crate::storage::{StorageError, Store};

/// Configs larger than this are not read for the page.
const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// The children of an index read for its page (and its summary); the rest
/// are listed by digest. An index may name thousands, or one child many
/// times: what one page view reads stays bounded.
const MAX_CHILDREN_READ: usize = 64;
/// Past this many summaries the cache starts over (a bound, not a ranking).
const MAX_SUMMARIES: usize = 100_000;

/// What a manifest is, for a row in a list of tags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Image,
    /// An index or manifest list of several manifests.
    Index,
    /// An OCI manifest whose artifact type is not an image's.
    Artifact(String),
}

/// One tag's manifest, in a line.
#[derive(Clone, Debug)]
pub struct Summary {
    pub kind: Kind,
    /// Config and layers, summed over the platforms of an index.
    pub size: u64,
    /// `os/architecture[/variant]`, one per image.
    pub platforms: Vec<String>,
}

/// Summaries by manifest digest, shared by every page.
#[derive(Default)]
pub struct Summaries {
    by_digest: DashMap<Digest, Arc<Summary>>,
}

impl Summaries {
    /// The summary of the manifest `digest` in `repo`, read once.
    pub fn get(
        &self,
        store: &Store,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Arc<Summary>, StorageError> {
        if let Some(s) = self.by_digest.get(digest) {
            return Ok(s.clone());
        }
        let summary = Arc::new(summarize(store, repo, digest)?);
        if self.by_digest.len() >= MAX_SUMMARIES {
            self.by_digest.clear();
        }
        self.by_digest.insert(digest.clone(), summary.clone());
        Ok(summary)
    }
}

fn read_manifest(
    store: &Store,
    repo: &RepoName,
    digest: &Digest,
) -> Result<(Manifest, usize, &'static str), StorageError> {
    let stored = store.get_manifest(repo, &Reference::Digest(digest.clone()))?;
    let m = Manifest::parse(&stored.bytes, Some(stored.media_type))?;
    Ok((m, stored.bytes.len(), stored.media_type))
}

fn summarize(store: &Store, repo: &RepoName, digest: &Digest) -> Result<Summary, StorageError> {
    let m = match read_manifest(store, repo, digest) {
        Ok((m, _, _)) => m,
        // Stored by another registry in a form we do not read.
        Err(StorageError::ManifestInvalid(_)) => {
            return Ok(Summary {
                kind: Kind::Artifact("unreadable manifest".into()),
                size: 0,
                platforms: vec![],
            })
        }
        Err(e) => return Err(e),
    };
    if m.kind.is_index() {
        let mut size = 0;
        let mut platforms = Vec::new();
        for (i, child) in distinct(&m.manifests).into_iter().enumerate() {
            // A child may be missing or unreadable: count what is there.
            // Other failures are not cached as a smaller size.
            if i >= MAX_CHILDREN_READ {
                // Not read: its manifest's size stands for it.
                size += child.size;
            } else {
                match read_manifest(store, repo, &child.digest) {
                    Ok((c, _, _)) => size += content_size(&c),
                    Err(StorageError::ManifestUnknown(_) | StorageError::ManifestInvalid(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            if let Some(p) = child.platform.as_ref().and_then(platform_of_value) {
                platforms.push(p);
            }
        }
        return Ok(Summary {
            kind: Kind::Index,
            size,
            platforms,
        });
    }
    let artifact = m.effective_artifact_type().filter(|t| !is_image_config(t));
    let platform = match &artifact {
        None => read_config(store, repo, &m)?.and_then(|c| c.platform()),
        Some(_) => None,
    };
    Ok(Summary {
        kind: match artifact {
            Some(t) => Kind::Artifact(t),
            None => Kind::Image,
        },
        size: content_size(&m),
        platforms: platform.into_iter().collect(),
    })
}

/// An index's children, each digest once.
fn distinct(children: &[Descriptor]) -> Vec<&Descriptor> {
    let mut seen = std::collections::HashSet::new();
    children.iter().filter(|c| seen.insert(&c.digest)).collect()
}

fn content_size(m: &Manifest) -> u64 {
    m.config.iter().chain(&m.layers).map(|d| d.size).sum()
}

fn is_image_config(media_type: &str) -> bool {
    media_type == "application/vnd.oci.image.config.v1+json"
        || media_type == "application/vnd.docker.container.image.v1+json"
}

/// `os/architecture[/variant]` from a descriptor's `platform`.
fn platform_of_value(v: &serde_json::Value) -> Option<String> {
    let os = v.get("os")?.as_str()?;
    let arch = v.get("architecture")?.as_str()?;
    Some(platform_name(
        os,
        arch,
        v.get("variant").and_then(|x| x.as_str()),
    ))
}

fn platform_name(os: &str, arch: &str, variant: Option<&str>) -> String {
    match variant {
        Some(v) if !v.is_empty() => format!("{os}/{arch}/{v}"),
        _ => format!("{os}/{arch}"),
    }
}

/// The parts of an image config people read. Every field is optional and
/// lenient: configs come from many builders.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub created: Option<String>,
    #[serde(default)]
    pub os: Option<String>,
    #[serde(default)]
    pub architecture: Option<String>,
    #[serde(default)]
    pub variant: Option<String>,
    #[serde(default)]
    pub author: Option<String>,
    #[serde(default)]
    pub config: RunConfig,
    #[serde(default)]
    pub history: Vec<HistoryEntry>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct HistoryEntry {
    #[serde(default)]
    pub created: Option<String>,
    #[serde(default)]
    pub created_by: Option<String>,
    #[serde(default)]
    pub comment: Option<String>,
    #[serde(default)]
    pub empty_layer: bool,
}

impl ImageConfig {
    pub fn platform(&self) -> Option<String> {
        Some(platform_name(
            self.os.as_deref()?,
            self.architecture.as_deref()?,
            self.variant.as_deref(),
        ))
    }
}

fn read_config(
    store: &Store,
    repo: &RepoName,
    m: &Manifest,
) -> Result<Option<ImageConfig>, StorageError> {
    let Some(config) = &m.config else {
        return Ok(None);
    };
    if !is_image_config(&config.media_type) {
        return Ok(None);
    }
    let bytes = store.read_small_blob(repo, &config.digest, MAX_CONFIG_BYTES)?;
    // A config that is not what it says shows as unknown, not as an error.
    Ok(bytes.and_then(|b| serde_json::from_slice(&b).ok()))
}

/// One image of an image page: a single-platform manifest, or one child
/// of an index.
#[derive(Clone, Debug)]
pub struct ImageDetails {
    pub digest: Digest,
    pub platform: Option<String>,
    pub artifact_type: Option<String>,
    pub config_digest: Option<Digest>,
    pub config: Option<ImageConfig>,
    pub layers: Vec<Descriptor>,
    pub size: u64,
    /// Why the child of an index is shown by digest alone, if it is.
    pub not_shown: Option<&'static str>,
}

/// Everything an image page shows.
#[derive(Clone, Debug)]
pub struct ImageView {
    pub digest: Digest,
    pub media_type: &'static str,
    pub is_index: bool,
    pub manifest_size: usize,
    /// The manifest as stored, indented for reading.
    pub manifest_json: String,
    pub annotations: BTreeMap<String, String>,
    pub subject: Option<Digest>,
    pub images: Vec<ImageDetails>,
    pub referrers: Vec<Descriptor>,
}

/// Read the image `reference` of `repo` for its page.
pub fn view(
    store: &Store,
    repo: &RepoName,
    reference: &Reference,
) -> Result<ImageView, StorageError> {
    let stored = store.get_manifest(repo, reference)?;
    // A manifest we cannot read is still shown as it is stored.
    let parsed = Manifest::parse(&stored.bytes, Some(stored.media_type)).ok();
    let manifest_json = serde_json::from_slice::<serde_json::Value>(&stored.bytes)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_else(|_| String::from_utf8_lossy(&stored.bytes).into_owned());
    let images = match &parsed {
        None => vec![],
        Some(m) if m.kind.is_index() => distinct(&m.manifests)
            .into_iter()
            .enumerate()
            .map(|(i, child)| {
                let platform = child.platform.as_ref().and_then(platform_of_value);
                let by_digest = |why| ImageDetails {
                    digest: child.digest.clone(),
                    platform: platform.clone(),
                    artifact_type: child.artifact_type.clone(),
                    config_digest: None,
                    config: None,
                    layers: vec![],
                    size: child.size,
                    not_shown: Some(why),
                };
                if i >= MAX_CHILDREN_READ {
                    return Ok(by_digest(
                        "Not read for this page: the index names too many manifests. Open it by its digest.",
                    ));
                }
                match read_manifest(store, repo, &child.digest) {
                    Ok((c, _, _)) => details(store, repo, &child.digest, &c, platform.clone()),
                    Err(StorageError::ManifestUnknown(_)) => {
                        Ok(by_digest("This manifest is not stored here."))
                    }
                    Err(StorageError::ManifestInvalid(_)) => Ok(by_digest(
                        "This manifest is in a form this registry does not read.",
                    )),
                    Err(e) => Err(e),
                }
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(m) => vec![details(store, repo, &stored.digest, m, None)?],
    };
    let referrers = store.referrers(repo, &stored.digest, None)?;
    Ok(ImageView {
        is_index: parsed.as_ref().is_some_and(|m| m.kind.is_index()),
        media_type: stored.media_type,
        manifest_size: stored.bytes.len(),
        manifest_json,
        annotations: parsed
            .as_ref()
            .and_then(|m| m.annotations.clone())
            .unwrap_or_default(),
        subject: parsed
            .as_ref()
            .and_then(|m| m.subject.as_ref())
            .map(|s| s.digest.clone()),
        digest: stored.digest,
        images,
        referrers,
    })
}

fn details(
    store: &Store,
    repo: &RepoName,
    digest: &Digest,
    m: &Manifest,
    platform: Option<String>,
) -> Result<ImageDetails, StorageError> {
    let artifact_type = m.effective_artifact_type().filter(|t| !is_image_config(t));
    let config = read_config(store, repo, m)?;
    Ok(ImageDetails {
        digest: digest.clone(),
        platform: platform.or_else(|| config.as_ref().and_then(|c| c.platform())),
        artifact_type,
        config_digest: m.config.as_ref().map(|c| c.digest.clone()),
        config,
        layers: m.layers.clone(),
        size: content_size(m),
        not_shown: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_from_many_builders_read_leniently() {
        let c: ImageConfig = serde_json::from_str(
            r#"{"created":"2024-01-02T03:04:05Z","architecture":"arm64","variant":"v8","os":"linux",
                "config":{"Entrypoint":["/bin/app"],"Cmd":null,"Env":["A=1"],"Labels":{"x":"<b>"}},
                "history":[{"created_by":"RUN true","empty_layer":true},{}],"rootfs":{}}"#,
        )
        .unwrap();
        assert_eq!(c.platform().as_deref(), Some("linux/arm64/v8"));
        assert_eq!(c.config.entrypoint, Some(vec!["/bin/app".to_string()]));
        assert_eq!(c.config.cmd, None);
        assert_eq!(c.history.len(), 2);
        assert!(c.history[0].empty_layer);
        let bare: ImageConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(bare.platform(), None);
    }

    #[test]
    fn platforms_of_index_entries() {
        let v = serde_json::json!({"os": "linux", "architecture": "arm", "variant": "v7"});
        assert_eq!(platform_of_value(&v).as_deref(), Some("linux/arm/v7"));
        let v = serde_json::json!({"os": "windows", "architecture": "amd64", "variant": ""});
        assert_eq!(platform_of_value(&v).as_deref(), Some("windows/amd64"));
        assert_eq!(platform_of_value(&serde_json::json!({"os": "linux"})), None);
    }
}
