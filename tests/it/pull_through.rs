//! The pull-through cache (`proxy`) against a real upstream registry (our
//! own server, then one behind a fault proxy): fetched once, verified,
//! served while the upstream is down, coalesced, never stored corrupt.

use std::io::Read;
use std::sync::Arc;

use crate::auth::htpasswd_server;
use crate::support::distribution::Distribution;
use crate::support::pki;
use crate::support::proxy::{FaultProxy, Faults};
use crate::support::*;

fn cache_of(upstream: &str, extra: &str) -> Server {
    Server::start_with(Opts {
        extra: format!("proxy:\n  remoteurl: http://{upstream}\n{extra}"),
        ..Opts::default()
    })
}

/// An image with one layer of `size` bytes; its manifest digest and layer.
fn push_big(c: &Client, repo: &str, tag: &str, size: usize, seed: u8) -> (String, String, Vec<u8>) {
    let config = format!(r#"{{"architecture":"amd64","os":"linux","seed":{seed}}}"#);
    let layer: Vec<u8> = (0..size)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect();
    let cd = put_blob(c, repo, config.as_bytes());
    let ld = put_blob(c, repo, &layer);
    let m = image_manifest(&cd, config.len(), &[(&ld, layer.len())], None);
    c.put_manifest(repo, tag, OCI_MANIFEST, m.as_bytes())
        .expect(201, None);
    (sha256(m.as_bytes()), ld, layer)
}

/// A blob pushed in two steps (POST, then PUT with the bytes), which
/// Distribution 2.8 takes too.
fn put_blob(c: &Client, repo: &str, data: &[u8]) -> String {
    let d = sha256(data);
    let r = c.call("POST", &format!("/v2/{repo}/blobs/uploads/"), &[], None);
    r.expect(202, None);
    let loc = r.header("location").unwrap();
    let sep = if loc.contains('?') { '&' } else { '?' };
    c.call(
        "PUT",
        &format!("{loc}{sep}digest={d}"),
        &[("content-type", "application/octet-stream")],
        Some(data),
    )
    .expect(201, None);
    d
}

fn metric(s: &Server, name: &str) -> u64 {
    let text = String::from_utf8(Client::new(s).get("/metrics").body).unwrap();
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Blob GETs the upstream answered 200.
fn upstream_blob_gets(upstream: &Server) -> u64 {
    metric(
        upstream,
        "registry_http_requests_total{route=\"blob\",method=\"GET\",status=\"200\"}",
    )
}

#[test]
fn pulls_are_fetched_once_then_served_even_with_the_upstream_down() {
    let mut up = Server::start();
    let u = Client::new(&up);
    let (digest, layer, bytes) = push_big(&u, "library/app", "1.0", 3 << 20, 1);
    let cache = cache_of(&up.addr, "");
    let c = Client::new(&cache);

    let m = c.get("/v2/library/app/manifests/1.0");
    m.expect(200, None);
    assert_eq!(m.header("docker-content-digest"), Some(digest.as_str()));
    let head = c.head(&format!("/v2/library/app/blobs/{layer}"));
    head.expect(200, None);
    assert_eq!(head.header("content-length"), Some("3145728"));
    assert_eq!(upstream_blob_gets(&up), 0, "a HEAD fetches nothing");
    let b = c.get(&format!("/v2/library/app/blobs/{layer}"));
    b.expect(200, None);
    assert_eq!(sha256(&b.body), layer);
    assert_eq!(b.body, bytes);
    // A Range of a cached blob, and a second pull: from the store.
    let r = c.call(
        "GET",
        &format!("/v2/library/app/blobs/{layer}"),
        &[("range", "bytes=10-19")],
        None,
    );
    r.expect(206, None);
    assert_eq!(r.body, bytes[10..20]);
    c.get(&format!("/v2/library/app/blobs/{layer}"))
        .expect(200, None);
    assert_eq!(upstream_blob_gets(&up), 1, "fetched once");
    assert!(cache.has_blob(&layer), "kept in the cache's store");
    let catalog = c.get("/v2/_catalog").json();
    assert_eq!(catalog["repositories"][0], "library/app");

    // The upstream goes away: the cached tag and blob are still served;
    // what was never cached is 503 with the reason.
    up.kill9();
    let m = c.get("/v2/library/app/manifests/1.0");
    m.expect(200, None);
    assert_eq!(m.header("docker-content-digest"), Some(digest.as_str()));
    c.get(&format!("/v2/library/app/blobs/{layer}"))
        .expect(200, None);
    // The tag list: the cached tags while the upstream cannot be asked.
    let tags = c.get("/v2/library/app/tags/list").json();
    assert_eq!(tags["tags"], serde_json::json!(["1.0"]));
    let miss = c.get("/v2/library/app/manifests/2.0");
    miss.expect(503, Some("UNAVAILABLE"));
    assert!(
        String::from_utf8_lossy(&miss.body).contains("cannot be asked"),
        "{}",
        String::from_utf8_lossy(&miss.body)
    );
    assert!(miss.header("retry-after").is_some());
    assert!(metric(&cache, "registry_proxy_stale_served_total") >= 1);
    assert!(cache.log_contains("serving the cached tag"));
}

#[test]
fn concurrent_misses_make_one_upstream_fetch() {
    let up = Server::start();
    let (_, layer, bytes) = push_big(&Client::new(&up), "team/big", "v1", 48 << 20, 2);
    let cache = cache_of(&up.addr, "");
    let addr = Arc::new(cache.addr.clone());
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (addr, layer) = (addr.clone(), layer.clone());
            std::thread::spawn(move || {
                Client::for_addr(&addr)
                    .get(&format!("/v2/team/big/blobs/{layer}"))
                    .body
            })
        })
        .collect();
    for t in threads {
        assert!(
            t.join().unwrap() == bytes,
            "every client got the whole blob"
        );
    }
    assert_eq!(upstream_blob_gets(&up), 1, "one fetch for eight clients");
    assert_eq!(metric(&cache, "registry_proxy_misses_total"), 1);
    assert_eq!(
        metric(&cache, "registry_proxy_coalesced_total")
            + metric(&cache, "registry_proxy_hits_total"),
        7,
        "the other seven joined the fetch or found the blob stored"
    );
}

#[test]
fn a_corrupt_upstream_answer_fails_the_pull_and_is_never_stored() {
    let up = Server::start();
    let (_, layer, _) = push_big(&Client::new(&up), "team/app", "v1", 4 << 20, 3);
    // Every answer of the upstream has one byte flipped past its head.
    let faulty = FaultProxy::start(
        &up.addr,
        Faults {
            flip_downstream_at: Some(1 << 20),
            ..Faults::default()
        },
    );
    let cache = cache_of(&faulty.addr, "");
    let url = cache.url(&format!("/v2/team/app/blobs/{layer}"));
    for _ in 0..2 {
        let mut body = Vec::new();
        let read = ureq::get(&url)
            .call()
            .map(|r| r.into_reader().read_to_end(&mut body));
        let complete = matches!(read, Ok(Ok(n)) if n == 4 << 20);
        assert!(!complete, "a corrupt blob must not arrive whole");
        assert!(!cache.has_blob(&layer), "nothing corrupt is kept");
    }
    assert_eq!(upstream_blob_gets(&up), 2, "each pull asked again");
    assert!(cache.log_contains("blob not cached"));
}

#[test]
fn tags_follow_the_upstream_unless_trusted_for_a_ttl() {
    let up = Server::start();
    let u = Client::new(&up);
    let (first, _, _) = push_big(&u, "team/app", "latest", 1000, 4);
    let fresh = cache_of(&up.addr, "");
    let trusting = cache_of(&up.addr, "  ttl: 1h\n");
    for cache in [&fresh, &trusting] {
        let m = Client::new(cache).get("/v2/team/app/manifests/latest");
        assert_eq!(m.header("docker-content-digest"), Some(first.as_str()));
    }
    let (second, _, _) = push_big(&u, "team/app", "latest", 1000, 5);
    let m = Client::new(&fresh).get("/v2/team/app/manifests/latest");
    assert_eq!(m.header("docker-content-digest"), Some(second.as_str()));
    let m = Client::new(&trusting).get("/v2/team/app/manifests/latest");
    assert_eq!(
        m.header("docker-content-digest"),
        Some(first.as_str()),
        "within the ttl the cached tag is served without asking"
    );
    // The tag list is the upstream's, uncached tags included, paged.
    push_big(&u, "team/app", "other", 10, 6);
    let r = Client::new(&fresh).get("/v2/team/app/tags/list?n=1");
    r.expect(200, None);
    assert_eq!(r.json()["tags"], serde_json::json!(["latest"]));
    assert_eq!(r.json()["name"], "team/app");
    assert_eq!(
        r.header("link"),
        Some("</v2/team/app/tags/list?last=latest&n=1>; rel=\"next\"")
    );
    let all = Client::new(&fresh).get("/v2/team/app/tags/list").json();
    assert_eq!(all["tags"], serde_json::json!(["latest", "other"]));
    // By digest, both serve either image.
    for d in [&first, &second] {
        Client::new(&trusting)
            .get(&format!("/v2/team/app/manifests/{d}"))
            .expect(200, None);
    }
    Client::new(&fresh)
        .get("/v2/team/app/manifests/gone")
        .expect(404, Some("MANIFEST_UNKNOWN"));
}

#[test]
fn a_cache_takes_no_pushes_and_logs_in_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let (up, _) = htpasswd_server(dir.path(), &[("mirror", "pw")], "");
    let (digest, _, _) = push_big(
        &Client::new(&up).basic("mirror", "pw"),
        "team/app",
        "v1",
        100,
        6,
    );
    let cache = cache_of(&up.addr, "  username: mirror\n  password: pw\n");
    let c = Client::new(&cache);
    let m = c.get("/v2/team/app/manifests/v1");
    m.expect(200, None);
    assert_eq!(m.header("docker-content-digest"), Some(digest.as_str()));
    let r = c.call("POST", "/v2/team/app/blobs/uploads/", &[], None);
    r.expect(405, Some("UNSUPPORTED"));
    assert!(String::from_utf8_lossy(&r.body).contains("pull-through cache"));
    c.put_manifest("team/app", "v2", OCI_MANIFEST, b"{}")
        .expect(405, Some("UNSUPPORTED"));
    c.call(
        "DELETE",
        &format!("/v2/team/app/manifests/{digest}"),
        &[],
        None,
    )
    .expect(405, Some("UNSUPPORTED"));

    let wrong = cache_of(&up.addr, "  username: mirror\n  password: nope\n");
    let r = Client::new(&wrong).get("/v2/team/app/manifests/v1");
    r.expect(503, Some("UNAVAILABLE"));
    assert!(
        String::from_utf8_lossy(&r.body).contains("refused the configured credentials"),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
}

#[test]
fn from_distribution_with_basic_logins() {
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    std::fs::write(
        &htpasswd,
        format!("mirror:{}\n", bcrypt::hash("pw", 4).unwrap()),
    )
    .unwrap();
    let dist = Distribution::start_with(&format!(
        "auth:\n  htpasswd:\n    realm: basic\n    path: {}\n",
        htpasswd.display()
    ));
    let d = Client::for_addr(&dist.addr).basic("mirror", "pw");
    let (digest, layer, bytes) = push_big(&d, "library/tool", "2", 2 << 20, 7);
    let cache = cache_of(&dist.addr, "  username: mirror\n  password: pw\n");
    let c = Client::new(&cache);
    let m = c.get("/v2/library/tool/manifests/2");
    m.expect(200, None);
    assert_eq!(m.header("docker-content-digest"), Some(digest.as_str()));
    assert_eq!(
        c.get(&format!("/v2/library/tool/blobs/{layer}")).body,
        bytes
    );
    let wrong = cache_of(&dist.addr, "  username: mirror\n  password: nope\n");
    Client::new(&wrong)
        .get("/v2/library/tool/manifests/2")
        .expect(503, Some("UNAVAILABLE"));
}

#[test]
fn from_an_upstream_with_token_logins() {
    let dir = tempfile::tempdir().unwrap();
    let signer = pki::TokenSigner::new(dir.path(), "tokens");
    let bundle = signer.bundle.clone();
    let now = pki::now() as i64;
    let push = signer.sign(
        &serde_json::json!({"iss": "test-issuer", "sub": "ci", "aud": "registry.test", "exp": now + 300,
            "nbf": now - 10, "iat": now - 10,
            "access": [{"type": "repository", "name": "team/app", "actions": ["pull", "push"]}]}),
        false,
    );
    // Checks Basic robot:secret, then signs what each scope asks.
    let service = pki::token_service(signer);
    let up = Server::start_with(Opts {
        extra: format!(
            "auth:\n  token:\n    realm: http://{service}/token\n    service: registry.test\n    issuer: test-issuer\n    rootcertbundle: {}\n",
            bundle.display()
        ),
        ..Opts::default()
    });
    let pusher = Client::new(&up).with_authorization(&format!("Bearer {push}"));
    let (digest, layer, bytes) = push_big(&pusher, "team/app", "v1", 1 << 20, 8);
    let cache = cache_of(&up.addr, "  username: robot\n  password: secret\n");
    let c = Client::new(&cache);
    let m = c.get("/v2/team/app/manifests/v1");
    m.expect(200, None);
    assert_eq!(m.header("docker-content-digest"), Some(digest.as_str()));
    assert_eq!(c.get(&format!("/v2/team/app/blobs/{layer}")).body, bytes);
}

#[test]
fn an_upstream_that_asks_for_a_pause_is_left_alone() {
    let mut up = Server::start();
    let (digest, _, _) = push_big(&Client::new(&up), "team/app", "v1", 100, 9);
    // Every request answered 429 with Retry-After: 1 for a while.
    let busy = FaultProxy::start(
        &up.addr,
        Faults {
            busy: 1000,
            ..Faults::default()
        },
    );
    let cache = cache_of(&busy.addr, "");
    let c = Client::new(&cache);
    let r = c.get("/v2/team/app/manifests/v1");
    r.expect(503, Some("UNAVAILABLE"));
    assert_eq!(r.header("retry-after"), Some("1"));
    let asked = busy.busy_served.load(std::sync::atomic::Ordering::SeqCst);
    // Within the pause the upstream is not asked again.
    c.get("/v2/team/app/manifests/v1")
        .expect(503, Some("UNAVAILABLE"));
    assert_eq!(
        busy.busy_served.load(std::sync::atomic::Ordering::SeqCst),
        asked
    );
    up.kill9();
    let _ = digest;
}

#[test]
fn several_upstreams_by_prefix_with_pushes_beside() {
    let ours = Server::start();
    let dist = Distribution::start();
    let (a, a_layer, a_bytes) = push_big(&Client::new(&ours), "library/app", "1", 1000, 10);
    let (b, _, _) = push_big(&Client::for_addr(&dist.addr), "org/tool", "2", 1000, 11);
    let cache = Server::start_with(Opts {
        extra: format!(
            "caches:\n  - prefix: hub/\n    remoteurl: http://{}\n  - prefix: other/\n    remoteurl: http://{}\n",
            ours.addr, dist.addr
        ),
        ..Opts::default()
    });
    let c = Client::new(&cache);
    let m = c.get("/v2/hub/library/app/manifests/1");
    assert_eq!(m.header("docker-content-digest"), Some(a.as_str()));
    assert_eq!(
        c.get(&format!("/v2/hub/library/app/blobs/{a_layer}")).body,
        a_bytes
    );
    let m = c.get("/v2/other/org/tool/manifests/2");
    assert_eq!(m.header("docker-content-digest"), Some(b.as_str()));
    // Names no cache serves are this registry's own: pushes work there.
    let (_, own) = c.push_image("team/mine", "v1", "local");
    c.get(&format!("/v2/team/mine/manifests/{own}"))
        .expect(200, None);
    c.call("POST", "/v2/hub/library/app/blobs/uploads/", &[], None)
        .expect(405, Some("UNSUPPORTED"));
    // A blob of a local repository is not served through a cached name by
    // its digest: the upstream does not have it there.
    let secret = c.push_blob("team/mine", b"private bytes");
    c.get(&format!("/v2/hub/library/app/blobs/{secret}"))
        .expect(404, Some("BLOB_UNKNOWN"));
    // Nothing under a prefix is a local name: unknown upstream, unknown here.
    c.get("/v2/hub/library/none/manifests/1")
        .expect(404, Some("MANIFEST_UNKNOWN"));
    let catalog = c.get("/v2/_catalog").json();
    assert_eq!(
        catalog["repositories"],
        serde_json::json!(["hub/library/app", "other/org/tool", "team/mine"])
    );
    assert!(metric(&cache, "registry_proxy_misses_total{prefix=\"hub/\"") >= 2);
}

#[test]
fn cache_mistakes_stop_the_start_with_their_name() {
    for (extra, want) in [
        ("caches:\n  - prefix: hub\n    remoteurl: http://h:1\n", "ending in '/'"),
        ("caches:\n  - prefix: Hub/\n    remoteurl: http://h:1\n", "ending in '/'"),
        (
            "caches:\n  - prefix: a/\n    remoteurl: http://h:1\n  - prefix: a/\n    remoteurl: http://h:2\n",
            "given twice",
        ),
        ("caches:\n  - prefix: a/\n    remoteurl: h:1\n", "must start with https:// or http://"),
        ("caches:\n  - prefix: a/\n    remoteurl: http://h:1/v2\n", "without a path"),
        ("caches:\n  - prefix: a/\n    remote: http://h:1\n", "unknown key \"remote\""),
        ("proxy:\n  remoteurl: http://h:1\n  username: u\n", "go together"),
    ] {
        let out = refused_start(extra);
        assert!(out.contains(want), "{want} not in: {out}");
    }
}

#[test]
fn cached_content_nobody_pulled_is_collected() {
    let up = Server::start();
    let u = Client::new(&up);
    let (a, a_layer, _) = push_big(&u, "library/app", "a", 5000, 12);
    let (b, b_layer, b_bytes) = push_big(&u, "library/app", "b", 5000, 13);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let opts = Opts {
        extra: format!("proxy:\n  remoteurl: http://{}\n", up.addr),
        ..Opts::default()
    };
    let mut cache = Server::start_at(&root, opts.clone());
    let c = Client::new(&cache);
    for (tag, layer) in [("a", &a_layer), ("b", &b_layer)] {
        c.get(&format!("/v2/library/app/manifests/{tag}"))
            .expect(200, None);
        c.get(&format!("/v2/library/app/blobs/{layer}"))
            .expect(200, None);
    }
    std::thread::sleep(std::time::Duration::from_millis(2500));
    // A new process (its notes of pulls start empty) serves b again: b's
    // pull is written down; a's is 2.5 s old.
    cache.kill9();
    let cache = Server::start_at(&root, opts);
    let c = Client::new(&cache);
    c.get("/v2/library/app/manifests/b").expect(200, None);
    std::thread::sleep(std::time::Duration::from_millis(300));

    let (code, report, err) = run_gc(&cache.config, &["--cache-unused", "2s", "--grace", "0"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(report["cached_manifests_expired"], 1, "{report}");
    assert!(!cache.has_blob(&a_layer), "what only a used is freed");
    assert!(!cache.has_blob(&a), "a's manifest too");
    assert!(
        cache.has_blob(&b_layer) && cache.has_blob(&b),
        "b was pulled: kept"
    );
    // Pulled again, a comes back from the upstream.
    let m = c.get("/v2/library/app/manifests/a");
    m.expect(200, None);
    assert_eq!(m.header("docker-content-digest"), Some(a.as_str()));
    c.get(&format!("/v2/library/app/blobs/{a_layer}"))
        .expect(200, None);
    assert_eq!(
        c.get(&format!("/v2/library/app/blobs/{b_layer}")).body,
        b_bytes
    );

    let plain = Server::start();
    let (code, _, err) = run_gc(&plain.config, &["--cache-unused", "1h"]);
    assert_ne!(code, 0);
    assert!(err.contains("names no pull-through cache"), "{err}");
}
