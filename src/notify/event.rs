//! Events in Distribution's envelope: what happened (`action`), to what
//! (`target`), asked by whom (`request`, `actor`), seen where (`source`).
//! Receivers written for Distribution read them unchanged.

use serde::Serialize;

use crate::oci::Digest;

/// The media type of a POST of events, as Distribution sends it.
pub const MEDIA_TYPE: &str = "application/vnd.docker.distribution.events.v1+json";

/// What a request did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Push,
    Pull,
    Delete,
    Mount,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Push => "push",
            Action::Pull => "pull",
            Action::Delete => "delete",
            Action::Mount => "mount",
        }
    }
}

/// One thing a request did, as a handler knows it. A response carries the
/// list in its extensions (`Happened`); the server adds who asked.
#[derive(Clone, Debug)]
pub struct Occurrence {
    pub action: Action,
    pub repository: String,
    pub digest: Option<Digest>,
    pub media_type: Option<String>,
    pub size: Option<u64>,
    pub tag: Option<String>,
    pub from_repository: Option<String>,
}

impl Occurrence {
    pub fn new(action: Action, repository: &str) -> Occurrence {
        Occurrence {
            action,
            repository: repository.to_string(),
            digest: None,
            media_type: None,
            size: None,
            tag: None,
            from_repository: None,
        }
    }

    pub fn digest(mut self, d: &Digest) -> Self {
        self.digest = Some(d.clone());
        self
    }

    pub fn media_type(mut self, m: &str) -> Self {
        self.media_type = Some(m.to_string());
        self
    }

    pub fn size(mut self, n: u64) -> Self {
        self.size = Some(n);
        self
    }

    pub fn tag(mut self, t: &str) -> Self {
        self.tag = Some(t.to_string());
        self
    }

    pub fn from_repository(mut self, r: &str) -> Self {
        self.from_repository = Some(r.to_string());
        self
    }
}

/// What a response did, in its extensions, for the server to announce.
#[derive(Clone, Debug, Default)]
pub struct Happened(pub Vec<Occurrence>);

/// The request an event came from.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RequestInfo {
    pub id: String,
    pub addr: String,
    pub host: String,
    pub method: String,
    pub useragent: String,
}

/// Who asked: empty for anonymous callers.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Actor {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// The registry that saw it.
#[derive(Clone, Debug, Serialize)]
pub struct Source {
    pub addr: String,
    #[serde(rename = "instanceID")]
    pub instance_id: String,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<Digest>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub length: Option<u64>,
    pub repository: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_repository: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Event {
    pub id: String,
    pub timestamp: String,
    pub action: Action,
    pub target: Target,
    pub request: RequestInfo,
    pub actor: Actor,
    pub source: Source,
}

impl Event {
    /// `url` is where the target can be fetched, when it has a digest.
    pub fn new(
        o: Occurrence,
        url: Option<String>,
        request: &RequestInfo,
        actor: &Actor,
        source: &Source,
    ) -> Event {
        Event {
            id: new_id(),
            timestamp: now_rfc3339(),
            action: o.action,
            target: Target {
                media_type: o.media_type,
                size: o.size,
                digest: o.digest,
                length: o.size,
                repository: o.repository,
                from_repository: o.from_repository,
                url,
                tag: o.tag,
            },
            request: request.clone(),
            actor: actor.clone(),
            source: source.clone(),
        }
    }
}

/// The body of one POST: `{"events": [...]}`.
pub fn envelope(events: &[&Event]) -> Vec<u8> {
    #[derive(Serialize)]
    struct Envelope<'a> {
        events: &'a [&'a Event],
    }
    serde_json::to_vec(&Envelope { events }).unwrap_or_default()
}

/// A random version 4 UUID, as Distribution's event and request ids are.
pub fn new_id() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_read_as_distribution_writes_them() {
        let d = Digest::sha256(b"m");
        let o = Occurrence::new(Action::Push, "team/app")
            .digest(&d)
            .media_type("application/vnd.oci.image.manifest.v1+json")
            .size(42)
            .tag("v1");
        let request = RequestInfo {
            id: new_id(),
            addr: "127.0.0.1:5000".into(),
            host: "reg:5000".into(),
            method: "PUT".into(),
            useragent: "docker/27".into(),
        };
        let source = Source {
            addr: "host:5000".into(),
            instance_id: new_id(),
        };
        let e = Event::new(
            o,
            Some("http://reg:5000/v2/team/app/manifests/x".into()),
            &request,
            &Actor {
                name: Some("ci".into()),
            },
            &source,
        );
        let v: serde_json::Value = serde_json::from_slice(&envelope(&[&e])).unwrap();
        let e = &v["events"][0];
        assert_eq!(e["action"], "push");
        assert_eq!(
            e["target"]["mediaType"],
            "application/vnd.oci.image.manifest.v1+json"
        );
        assert_eq!(e["target"]["size"], 42);
        assert_eq!(e["target"]["length"], 42);
        assert_eq!(e["target"]["digest"], d.to_string());
        assert_eq!(e["target"]["repository"], "team/app");
        assert_eq!(e["target"]["tag"], "v1");
        assert_eq!(e["request"]["useragent"], "docker/27");
        assert_eq!(e["actor"]["name"], "ci");
        assert!(e["source"]["instanceID"].is_string());
        let id = e["id"].as_str().unwrap();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(time::OffsetDateTime::parse(
            e["timestamp"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339
        )
        .is_ok());
    }
}
