//! Manifest parsing and validation: what a manifest is, and which other
//! content (config, layers, child manifests, subject) it refers to.
//!
//! The stored bytes are always the client's bytes; parsing only extracts
//! what the registry needs to check references and answer referrers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::digest::Digest;
use super::media::{self, ManifestKind};

/// A content descriptor, as it appears in manifests and referrers lists.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<serde_json::Value>,
}

/// The fields of any supported manifest that the registry looks at.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    schema_version: Option<i64>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
    annotations: Option<BTreeMap<String, String>>,
}

/// A parsed, validated manifest.
#[derive(Clone, Debug)]
pub struct Manifest {
    pub kind: ManifestKind,
    pub artifact_type: Option<String>,
    pub config: Option<Descriptor>,
    pub layers: Vec<Descriptor>,
    pub manifests: Vec<Descriptor>,
    pub subject: Option<Descriptor>,
    pub annotations: Option<BTreeMap<String, String>>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error("manifest is not valid JSON: {0}")]
    Json(String),
    #[error(
        "Docker schema1 manifests are not supported; push with a current client (schema2 or OCI)"
    )]
    Schema1,
    #[error("unsupported manifest schemaVersion {0}; expected 2")]
    SchemaVersion(i64),
    #[error("unsupported manifest media type {0:?}")]
    UnsupportedMediaType(String),
    #[error(
        "Content-Type {content_type:?} does not match the manifest's mediaType {media_type:?}"
    )]
    MediaTypeMismatch {
        content_type: String,
        media_type: String,
    },
    #[error(
        "cannot tell the manifest type: no mediaType, and neither config nor manifests present"
    )]
    UnknownKind,
    #[error("{0}")]
    Missing(&'static str),
}

impl Manifest {
    /// Parse manifest bytes. `content_type` is the request's Content-Type,
    /// used when the body does not name its own media type.
    pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<Manifest, ManifestError> {
        let content_type = content_type
            .map(|c| c.split(';').next().unwrap_or("").trim())
            .filter(|c| !c.is_empty());
        if matches!(
            content_type,
            Some(media::DOCKER_SCHEMA1 | media::DOCKER_SCHEMA1_SIGNED)
        ) {
            return Err(ManifestError::Schema1);
        }
        let raw: Raw =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Json(e.to_string()))?;
        match raw.schema_version {
            Some(2) => {}
            Some(1) => return Err(ManifestError::Schema1),
            Some(v) => return Err(ManifestError::SchemaVersion(v)),
            None => return Err(ManifestError::Missing("manifest has no schemaVersion")),
        }
        let kind = match raw.media_type.as_deref() {
            Some(mt) => {
                let kind = ManifestKind::from_media_type(mt)
                    .ok_or_else(|| ManifestError::UnsupportedMediaType(mt.to_string()))?;
                if let Some(ct) = content_type {
                    // Generic types say nothing about the manifest; anything else must agree.
                    let generic = ct == "application/json" || ct == "application/octet-stream";
                    if !generic && !ct.eq_ignore_ascii_case(mt) {
                        return Err(ManifestError::MediaTypeMismatch {
                            content_type: ct.to_string(),
                            media_type: mt.to_string(),
                        });
                    }
                }
                kind
            }
            None => match content_type.and_then(ManifestKind::from_media_type) {
                Some(kind) => kind,
                // OCI allows mediaType to be omitted; the shape tells.
                None if raw.manifests.is_some() => ManifestKind::OciIndex,
                None if raw.config.is_some() => ManifestKind::OciManifest,
                None => return Err(ManifestError::UnknownKind),
            },
        };
        let manifest = Manifest {
            kind,
            artifact_type: raw.artifact_type,
            config: raw.config,
            layers: raw.layers.unwrap_or_default(),
            manifests: raw.manifests.unwrap_or_default(),
            subject: raw.subject,
            annotations: raw.annotations,
        };
        if kind.is_index() {
            if manifest.config.is_some() || !manifest.layers.is_empty() {
                return Err(ManifestError::Missing(
                    "an index must not have config or layers",
                ));
            }
        } else if manifest.config.is_none() {
            return Err(ManifestError::Missing("image manifest has no config"));
        }
        Ok(manifest)
    }

    /// Blobs (config and layers) this manifest needs in the repository.
    /// Foreign layers, which carry `urls`, are fetched from elsewhere.
    pub fn required_blobs(&self) -> impl Iterator<Item = &Descriptor> {
        self.config
            .iter()
            .chain(self.layers.iter().filter(|d| d.urls.is_empty()))
    }

    /// The `artifactType` a referrers list reports for this manifest.
    pub fn effective_artifact_type(&self) -> Option<String> {
        self.artifact_type.clone().or_else(|| {
            self.config
                .as_ref()
                .map(|c| c.media_type.clone())
                .filter(|_| self.kind == ManifestKind::OciManifest)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn image(media_type: Option<&str>) -> String {
        let mt = media_type
            .map(|m| format!(r#""mediaType":"{m}","#))
            .unwrap_or_default();
        format!(
            r#"{{"schemaVersion":2,{mt}"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{D1}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{D2}","size":3}},{{"mediaType":"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip","digest":"{D2}","size":3,"urls":["https://example.com/x"]}}]}}"#
        )
    }

    #[test]
    fn image_manifest() {
        let m = Manifest::parse(image(Some(media::OCI_MANIFEST)).as_bytes(), None).unwrap();
        assert_eq!(m.kind, ManifestKind::OciManifest);
        assert_eq!(m.required_blobs().count(), 2, "foreign layer skipped");
        assert_eq!(
            m.effective_artifact_type().as_deref(),
            Some("application/vnd.oci.image.config.v1+json")
        );
        let m = Manifest::parse(image(None).as_bytes(), Some(media::DOCKER_MANIFEST)).unwrap();
        assert_eq!(m.kind, ManifestKind::DockerManifest);
        let m = Manifest::parse(image(None).as_bytes(), None).unwrap();
        assert_eq!(m.kind, ManifestKind::OciManifest);
    }

    #[test]
    fn refusals() {
        let cases: Vec<(String, Option<&str>, ManifestError)> = vec![
            ("{".into(), None, ManifestError::Json(String::new())),
            (
                r#"{"schemaVersion":1,"fsLayers":[]}"#.into(),
                None,
                ManifestError::Schema1,
            ),
            (
                "{}".into(),
                Some(media::DOCKER_SCHEMA1_SIGNED),
                ManifestError::Schema1,
            ),
            (
                r#"{"schemaVersion":3}"#.into(),
                None,
                ManifestError::SchemaVersion(3),
            ),
            (
                image(Some("application/x-other")),
                None,
                ManifestError::UnsupportedMediaType("application/x-other".into()),
            ),
            (
                image(Some(media::OCI_MANIFEST)),
                Some(media::DOCKER_MANIFEST),
                ManifestError::MediaTypeMismatch {
                    content_type: media::DOCKER_MANIFEST.into(),
                    media_type: media::OCI_MANIFEST.into(),
                },
            ),
            (
                r#"{"schemaVersion":2}"#.into(),
                None,
                ManifestError::UnknownKind,
            ),
        ];
        for (body, ct, want) in cases {
            let got = Manifest::parse(body.as_bytes(), ct).unwrap_err();
            match (&got, &want) {
                (ManifestError::Json(_), ManifestError::Json(_)) => {}
                _ => assert_eq!(got, want, "{body}"),
            }
        }
    }

    #[test]
    fn index_with_subject() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{{"mediaType":"{}","digest":"{D1}","size":7,"platform":{{"os":"linux","architecture":"amd64"}}}}],"subject":{{"mediaType":"{}","digest":"{D2}","size":9}},"artifactType":"application/x-sbom"}}"#,
            media::OCI_INDEX,
            media::OCI_MANIFEST,
            media::OCI_MANIFEST
        );
        let m = Manifest::parse(body.as_bytes(), Some(media::OCI_INDEX)).unwrap();
        assert!(m.kind.is_index());
        assert_eq!(m.manifests.len(), 1);
        assert_eq!(m.subject.unwrap().digest.to_string(), D2);
        assert_eq!(m.artifact_type.as_deref(), Some("application/x-sbom"));
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Any JSON value, nested a few levels.
    fn json() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            "\\PC{0,20}".prop_map(serde_json::Value::from),
            Just(serde_json::Value::from(
                "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
            )),
            Just(serde_json::Value::from(
                "application/vnd.oci.image.manifest.v1+json"
            )),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
                proptest::collection::btree_map(
                    prop_oneof![
                        Just("schemaVersion".to_string()),
                        Just("mediaType".to_string()),
                        Just("config".to_string()),
                        Just("layers".to_string()),
                        Just("manifests".to_string()),
                        Just("digest".to_string()),
                        Just("size".to_string()),
                        Just("subject".to_string()),
                        Just("urls".to_string()),
                        Just("fsLayers".to_string()),
                        "[a-z]{1,8}",
                    ],
                    inner,
                    0..6,
                )
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn any_bytes_parse_or_are_refused(
            bytes in proptest::collection::vec(any::<u8>(), 0..400),
            content_type in proptest::option::of("\\PC{0,60}"),
        ) {
            let _ = Manifest::parse(&bytes, content_type.as_deref());
        }

        #[test]
        fn any_json_parses_or_is_refused(value in json(), content_type in proptest::option::of(prop_oneof![
            Just("application/vnd.oci.image.manifest.v1+json".to_string()),
            Just("application/vnd.oci.image.index.v1+json".to_string()),
            Just("application/vnd.docker.distribution.manifest.v2+json".to_string()),
            Just("application/vnd.docker.distribution.manifest.list.v2+json".to_string()),
            Just("application/vnd.docker.distribution.manifest.v1+prettyjws".to_string()),
        ])) {
            let bytes = serde_json::to_vec(&value).unwrap();
            if let Ok(m) = Manifest::parse(&bytes, content_type.as_deref()) {
                // What it needs is listed without panicking, too.
                let _ = m.required_blobs().count();
            }
        }
    }
}
