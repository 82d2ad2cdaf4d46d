//! The manifest media types we serve, and `Accept` header matching.

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// The kinds of manifest this registry stores and serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ManifestKind {
    OciManifest,
    OciIndex,
    DockerManifest,
    DockerManifestList,
}

impl ManifestKind {
    pub fn media_type(self) -> &'static str {
        match self {
            ManifestKind::OciManifest => OCI_MANIFEST,
            ManifestKind::OciIndex => OCI_INDEX,
            ManifestKind::DockerManifest => DOCKER_MANIFEST,
            ManifestKind::DockerManifestList => DOCKER_MANIFEST_LIST,
        }
    }

    pub fn from_media_type(mt: &str) -> Option<ManifestKind> {
        match mt {
            OCI_MANIFEST => Some(ManifestKind::OciManifest),
            OCI_INDEX => Some(ManifestKind::OciIndex),
            DOCKER_MANIFEST => Some(ManifestKind::DockerManifest),
            DOCKER_MANIFEST_LIST => Some(ManifestKind::DockerManifestList),
            _ => None,
        }
    }

    /// Indexes and manifest lists point at other manifests.
    pub fn is_index(self) -> bool {
        matches!(
            self,
            ManifestKind::OciIndex | ManifestKind::DockerManifestList
        )
    }
}

/// Whether an `Accept` header value (possibly several, comma separated, with
/// parameters) admits `media_type`. An absent or empty header admits anything.
pub fn accepts<'a>(accept_values: impl IntoIterator<Item = &'a str>, media_type: &str) -> bool {
    let mut saw_any = false;
    for value in accept_values {
        for item in value.split(',') {
            let mt = item.split(';').next().unwrap_or("").trim();
            if mt.is_empty() {
                continue;
            }
            saw_any = true;
            if mt == "*/*" || mt.eq_ignore_ascii_case(media_type) {
                return true;
            }
            if let Some(prefix) = mt.strip_suffix("/*") {
                if media_type
                    .split('/')
                    .next()
                    .is_some_and(|t| t.eq_ignore_ascii_case(prefix))
                {
                    return true;
                }
            }
        }
    }
    !saw_any
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_matching() {
        assert!(accepts([], OCI_MANIFEST));
        assert!(accepts([""], OCI_MANIFEST));
        assert!(accepts(["*/*"], OCI_MANIFEST));
        assert!(accepts(["application/*"], OCI_MANIFEST));
        assert!(accepts(
            [
                DOCKER_MANIFEST,
                "application/vnd.oci.image.manifest.v1+json; q=0.5"
            ],
            OCI_MANIFEST
        ));
        assert!(accepts(
            [&format!("{DOCKER_MANIFEST}, {OCI_INDEX}")[..]],
            OCI_INDEX
        ));
        assert!(!accepts([DOCKER_MANIFEST], OCI_MANIFEST));
        assert!(!accepts(["text/*"], OCI_MANIFEST));
    }
}
