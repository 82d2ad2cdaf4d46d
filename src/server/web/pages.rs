//! The page's templates (askama: checked when the crate compiles, every
//! value HTML-escaped unless a template says otherwise, and none does) and
//! the rows they show, made from the domain's views.

use std::collections::BTreeMap;
use std::time::SystemTime;

use askama::Template;

use crate::browse::image::{ImageConfig, ImageDetails};
use crate::browse::{ImageView, Kind, Summary};
use crate::oci::{Descriptor, Digest};

/// What every page shows around its content.
pub struct Chrome {
    /// `http.prefix` without its trailing slash: every link starts with it.
    pub base: String,
    /// The registry's address as clients name it (`HOST:PORT`).
    pub host: String,
    /// The search box's text.
    pub query: String,
    /// The signed-in user, if any.
    pub user: Option<String>,
    /// Whether a login form can check passwords here.
    pub can_login: bool,
    /// The sign-in page, coming back here afterwards.
    pub login: String,
}

#[derive(Template)]
#[template(path = "list.html")]
pub struct ListPage {
    pub chrome: Chrome,
    pub rows: Vec<RepoRow>,
    pub total: usize,
    pub next: Option<String>,
    /// Anonymous, and nothing visible: say that signing in shows more.
    pub hidden_for_anonymous: bool,
}

pub struct RepoRow {
    pub name: String,
    pub tags: usize,
}

#[derive(Template)]
#[template(path = "repo.html")]
pub struct RepoPage {
    pub chrome: Chrome,
    pub name: String,
    pub rows: Vec<TagRow>,
    pub total: usize,
    pub sort_by_time: bool,
    pub may_delete: bool,
    pub next: Option<String>,
    pub note: Option<String>,
}

pub struct TagRow {
    pub tag: String,
    pub digest: String,
    pub short_digest: String,
    pub kind: String,
    pub platforms: String,
    pub size: String,
    pub pushed: Option<String>,
}

impl TagRow {
    pub fn new(tag: &str, digest: &Digest, summary: &Summary, pushed: Option<SystemTime>) -> Self {
        TagRow {
            tag: tag.to_string(),
            digest: digest.to_string(),
            short_digest: short(digest),
            kind: match &summary.kind {
                Kind::Image => "image".into(),
                Kind::Index => "index".into(),
                Kind::Artifact(t) => t.clone(),
            },
            platforms: summary.platforms.join(", "),
            size: human_size(summary.size),
            pushed: pushed.map(timestamp),
        }
    }
}

#[derive(Template)]
#[template(path = "image.html")]
pub struct ImagePage {
    pub chrome: Chrome,
    pub name: String,
    pub title: String,
    pub pull_commands: Vec<String>,
    pub view: ImageView,
    pub tags: Vec<String>,
    pub images: Vec<ImageRow>,
    pub referrers: Vec<ReferrerRow>,
}

pub struct ImageRow {
    pub digest: String,
    pub short_digest: String,
    pub platform: Option<String>,
    pub artifact_type: Option<String>,
    pub size: String,
    pub not_shown: Option<&'static str>,
    pub config: Option<ConfigRows>,
    pub layers: Vec<LayerRow>,
}

impl From<&ImageDetails> for ImageRow {
    fn from(d: &ImageDetails) -> Self {
        ImageRow {
            digest: d.digest.to_string(),
            short_digest: short(&d.digest),
            platform: d.platform.clone(),
            artifact_type: d.artifact_type.clone(),
            size: human_size(d.size),
            not_shown: d.not_shown,
            config: d.config.as_ref().map(ConfigRows::from),
            layers: d
                .layers
                .iter()
                .map(|l| LayerRow {
                    digest: l.digest.to_string(),
                    short_digest: short(&l.digest),
                    media_type: l.media_type.clone(),
                    size: human_size(l.size),
                })
                .collect(),
        }
    }
}

/// An image config, as text to show.
pub struct ConfigRows {
    pub created: Option<String>,
    pub author: Option<String>,
    pub entrypoint: Option<String>,
    pub cmd: Option<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub ports: String,
    pub env: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub history: Vec<HistoryRow>,
}

pub struct HistoryRow {
    pub created: Option<String>,
    pub step: String,
    pub empty_layer: bool,
}

impl From<&ImageConfig> for ConfigRows {
    fn from(c: &ImageConfig) -> Self {
        // Shown as the JSON array it is, so that arguments keep their bounds.
        let argv = |v: &Option<Vec<String>>| {
            v.as_ref()
                .filter(|v| !v.is_empty())
                .map(|v| serde_json::to_string(v).unwrap_or_default())
        };
        let nonempty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
        let run = &c.config;
        ConfigRows {
            created: nonempty(&c.created),
            author: nonempty(&c.author),
            entrypoint: argv(&run.entrypoint),
            cmd: argv(&run.cmd),
            working_dir: nonempty(&run.working_dir),
            user: nonempty(&run.user),
            ports: run
                .exposed_ports
                .as_ref()
                .map(|p| p.keys().cloned().collect::<Vec<_>>().join(", "))
                .unwrap_or_default(),
            env: run.env.clone().unwrap_or_default(),
            labels: run.labels.clone().unwrap_or_default(),
            history: c
                .history
                .iter()
                .map(|h| {
                    let by = h.created_by.as_deref().unwrap_or("");
                    // Dockerfile steps that make no layer read better bare.
                    let by = by.strip_prefix("/bin/sh -c #(nop) ").unwrap_or(by).trim();
                    let step = match h.comment.as_deref() {
                        Some(c) if !c.is_empty() && by.is_empty() => c.to_string(),
                        Some(c) if !c.is_empty() => format!("{by}  # {c}"),
                        _ => by.to_string(),
                    };
                    HistoryRow {
                        created: nonempty(&h.created),
                        step,
                        empty_layer: h.empty_layer,
                    }
                })
                .collect(),
        }
    }
}

pub struct LayerRow {
    pub digest: String,
    pub short_digest: String,
    pub media_type: String,
    pub size: String,
}

pub struct ReferrerRow {
    pub artifact_type: String,
    pub digest: String,
    pub short_digest: String,
    pub size: String,
    pub annotations: BTreeMap<String, String>,
}

impl From<&Descriptor> for ReferrerRow {
    fn from(d: &Descriptor) -> Self {
        ReferrerRow {
            artifact_type: d
                .artifact_type
                .clone()
                .unwrap_or_else(|| d.media_type.clone()),
            digest: d.digest.to_string(),
            short_digest: short(&d.digest),
            size: human_size(d.size),
            annotations: d.annotations.clone().unwrap_or_default(),
        }
    }
}

#[derive(Template)]
#[template(path = "delete.html")]
pub struct DeletePage {
    pub chrome: Chrome,
    pub name: String,
    pub tag: String,
    pub digest: String,
    pub others: Vec<String>,
    pub token: String,
}

#[derive(Template)]
#[template(path = "login.html")]
pub struct LoginPage {
    pub chrome: Chrome,
    pub error: Option<String>,
    pub next: String,
    pub token_auth: bool,
}

#[derive(Template)]
#[template(path = "message.html")]
pub struct MessagePage {
    pub chrome: Chrome,
    pub heading: String,
    pub text: String,
    pub offer_login: bool,
}

/// `sha256:0123456789ab`: enough to tell digests apart on a page.
pub fn short(d: &Digest) -> String {
    let s = d.to_string();
    let cut = s.find(':').map_or(0, |i| i + 1) + 12;
    s.chars().take(cut).collect()
}

/// Sizes in binary units, as people read them.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    match unit {
        0 => format!("{bytes} B"),
        _ if v < 10.0 => format!("{v:.1} {}", UNITS[unit]),
        _ => format!("{v:.0} {}", UNITS[unit]),
    }
}

/// RFC 3339 in UTC, to the second.
pub fn timestamp(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    t.replace_nanosecond(0)
        .unwrap_or(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_digests_read_well() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(50 << 20), "50 MiB");
        assert_eq!(human_size(3 << 30), "3.0 GiB");
        let d = Digest::sha256(b"x");
        assert_eq!(short(&d).len(), "sha256:".len() + 12);
        assert!(d.to_string().starts_with(&short(&d)));
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123);
        assert_eq!(timestamp(t), "2023-11-14T22:13:20Z");
    }

    fn chrome() -> Chrome {
        Chrome {
            base: String::new(),
            host: "r:5000".into(),
            query: "<q>".into(),
            user: Some("<u>".into()),
            can_login: true,
            login: "/ui/login".into(),
        }
    }

    #[test]
    fn user_content_is_escaped() {
        let html = ListPage {
            chrome: chrome(),
            rows: vec![RepoRow {
                name: "a\"><script>x()</script>".into(),
                tags: 0,
            }],
            total: 1,
            next: None,
            hidden_for_anonymous: false,
        }
        .render()
        .unwrap();
        assert!(!html.contains("<script>x()"), "{html}");
        assert!(!html.contains("<q>") && !html.contains("<u>"), "{html}");
        assert!(html.contains("&#60;script&#62;"), "{html}");
        assert!(
            html.contains(">empty<"),
            "empty repositories are shown as such"
        );
    }
}
