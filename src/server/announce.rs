//! From responses to events (`notify`): what a request did, announced with
//! who asked. Handlers put what only they know (a push's size, the tags a
//! delete removed) in the response's extensions as `Happened`; pulls are
//! read from the response itself.

use std::net::SocketAddr;

use http::{HeaderMap, Method, Request, Response};

use super::body::Body;
use super::route::Route;
use super::App;
use crate::auth::Identity;
use crate::notify::{event, Action, Actor, Event, Happened, Occurrence, RequestInfo};
use crate::oci::Reference;

/// Who asked what, kept from the request for its events.
pub(super) struct Asked {
    request: RequestInfo,
    actor: Actor,
    headers: HeaderMap,
}

impl Asked {
    pub(super) fn new<B>(req: &Request<B>, peer: SocketAddr, who: &Identity) -> Asked {
        let h = req.headers();
        let text = |name: &str| {
            h.get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        // Behind a proxy, the client's own address, as Distribution reports it.
        let forwarded = text("x-forwarded-for");
        let addr = match forwarded.split(',').next().map(str::trim) {
            Some(a) if !a.is_empty() => a.to_string(),
            _ => match text("x-real-ip") {
                ip if !ip.is_empty() => ip,
                _ => peer.to_string(),
            },
        };
        Asked {
            request: RequestInfo {
                id: event::new_id(),
                addr,
                host: text("host"),
                method: req.method().to_string(),
                useragent: text("user-agent"),
            },
            actor: Actor {
                name: match who {
                    Identity::Anonymous => None,
                    other => Some(other.name().to_string()),
                },
            },
            headers: h.clone(),
        }
    }
}

/// Queue the events of `occurrences` (nothing without endpoints).
pub(super) fn announce(app: &App, asked: &Asked, occurrences: Vec<Occurrence>) {
    let Some(notifier) = &app.notifier else {
        return;
    };
    let events = occurrences
        .into_iter()
        .map(|o| {
            // Where the content can be fetched; a delete names none.
            let kind = match o.media_type.as_deref() {
                None => None,
                Some(BLOB) => Some("blobs"),
                Some(_) => Some("manifests"),
            };
            let url = kind.zip(o.digest.as_ref()).map(|(kind, d)| {
                app.url(&asked.headers, &format!("/v2/{}/{kind}/{d}", o.repository))
            });
            Event::new(o, url, &asked.request, &asked.actor, &app.source)
        })
        .collect();
    notifier.send(events);
}

/// The media type Distribution reports for blobs.
pub(super) const BLOB: &str = "application/octet-stream";

/// What a successful answer did: what its handler said, and the pull that
/// a GET or HEAD of a manifest or blob is.
pub(super) fn happened(
    route: &Route,
    method: &Method,
    resp: &mut Response<Body>,
) -> Vec<Occurrence> {
    let mut all = resp
        .extensions_mut()
        .remove::<Happened>()
        .map(|h| h.0)
        .unwrap_or_default();
    if !resp.status().is_success() && !resp.status().is_redirection() {
        return all;
    }
    if *method != Method::GET && *method != Method::HEAD {
        return all;
    }
    let header = |name| resp.headers().get(name).and_then(|v| v.to_str().ok());
    match route {
        Route::Manifest(repo, reference) => {
            let mut o = Occurrence::new(Action::Pull, repo.as_str());
            if let Some(d) = header("docker-content-digest").and_then(|d| d.parse().ok()) {
                o = o.digest(&d);
            }
            if let Some(m) = header("content-type") {
                o = o.media_type(m);
            }
            if let Some(n) = header("content-length").and_then(|n| n.parse().ok()) {
                o = o.size(n);
            }
            if let Reference::Tag(t) = reference {
                o = o.tag(t.as_str());
            }
            all.push(o);
        }
        Route::Blob(repo, digest) => {
            // The whole blob's size, also for a Range (after the slash of
            // Content-Range); a redirect to the object store says none.
            let size = header("content-range")
                .and_then(|r| r.rsplit_once('/'))
                .and_then(|(_, total)| total.parse().ok())
                .or_else(|| {
                    (resp.status() == http::StatusCode::OK)
                        .then(|| header("content-length").and_then(|n| n.parse().ok()))
                        .flatten()
                });
            let mut o = Occurrence::new(Action::Pull, repo.as_str())
                .digest(digest)
                .media_type(BLOB);
            if let Some(n) = size {
                o = o.size(n);
            }
            all.push(o);
        }
        _ => {}
    }
    all
}

/// Say in a response what its request did, for `happened`.
pub(super) fn record(resp: &mut Response<Body>, o: Occurrence) {
    match resp.extensions_mut().get_mut::<Happened>() {
        Some(h) => h.0.push(o),
        None => {
            resp.extensions_mut().insert(Happened(vec![o]));
        }
    }
}
