//! registry-replicate between real registries on 127.0.0.1: ours, and
//! CNCF Distribution (Debian's docker-registry), in both directions.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::distribution::Distribution;
use crate::support::*;

const REPLICATE: &str = env!("CARGO_BIN_EXE_registry-replicate");

/// Run `registry-replicate FILE --once --json ARGS`: exit code, one summary
/// per rule, and stderr.
fn replicate(dir: &Path, yaml: &str, args: &[&str]) -> (i32, Vec<serde_json::Value>, String) {
    let file = dir.join(format!("replication-{}.yml", rand_suffix()));
    std::fs::write(&file, yaml).unwrap();
    let out = Command::new(REPLICATE)
        .arg(&file)
        .args(["--once", "--json"])
        .args(args)
        .output()
        .unwrap();
    let summaries = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    (
        out.status.code().unwrap_or(-1),
        summaries,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn peers(a: &str, b: &str) -> String {
    format!("peers:\n  a:\n    url: http://{a}\n  b:\n    url: http://{b}\n")
}

/// An image of one layer, `layer`, with a config naming `seed`, put at
/// `reference` (a tag, or None for its own digest); bytes and digest.
fn push_layer_image(
    c: &Client,
    repo: &str,
    reference: Option<&str>,
    seed: &str,
    layer: &[u8],
) -> (Vec<u8>, String) {
    let config = format!(r#"{{"architecture":"amd64","os":"linux","seed":"{seed}"}}"#);
    let cd = c.push_blob(repo, config.as_bytes());
    let ld = c.push_blob(repo, layer);
    let m = image_manifest(&cd, config.len(), &[(&ld, layer.len())], None);
    let d = sha256(m.as_bytes());
    c.put_manifest(repo, reference.unwrap_or(&d), OCI_MANIFEST, m.as_bytes())
        .expect(201, None);
    (m.into_bytes(), d)
}

/// `size` bytes that differ with `seed`.
fn noise(size: usize, seed: u32) -> Vec<u8> {
    let start = seed.wrapping_mul(0x9E37_79B9);
    (0..size as u32)
        .map(|i| (i.wrapping_add(start).wrapping_mul(2654435761) >> 24) as u8)
        .collect()
}

/// An image pushed by digest only (an index's child); bytes and digest.
fn push_child(c: &Client, repo: &str, seed: &str) -> (Vec<u8>, String) {
    push_layer_image(
        c,
        repo,
        None,
        seed,
        format!("layer of {seed} ").repeat(500).as_bytes(),
    )
}

/// A multi-arch index of two images, tagged `tag`; the index digest.
fn push_index(c: &Client, repo: &str, tag: &str) -> String {
    let (m1, d1) = push_child(c, repo, "amd64");
    let (m2, d2) = push_child(c, repo, "arm64");
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{d1}","size":{},"platform":{{"architecture":"amd64","os":"linux"}}}},{{"mediaType":"{OCI_MANIFEST}","digest":"{d2}","size":{},"platform":{{"architecture":"arm64","os":"linux"}}}}]}}"#,
        m1.len(),
        m2.len()
    );
    c.put_manifest(repo, tag, OCI_INDEX, index.as_bytes())
        .expect(201, None);
    sha256(index.as_bytes())
}

/// A signature-like artifact whose subject is `subject`; its digest.
fn push_referrer(c: &Client, repo: &str, subject: &str, subject_size: usize) -> String {
    let empty = c.push_blob(repo, b"{}");
    let sig = c.push_blob(repo, b"a signature");
    let m = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","artifactType":"application/vnd.example.sig","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{empty}","size":2}},"layers":[{{"mediaType":"application/octet-stream","digest":"{sig}","size":11}}],"subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{subject}","size":{subject_size}}}}}"#
    );
    let d = sha256(m.as_bytes());
    c.put_manifest(repo, &d, OCI_MANIFEST, m.as_bytes())
        .expect(201, None);
    d
}

fn digest_of(c: &Client, repo: &str, reference: &str) -> Option<String> {
    let r = c.call(
        "GET",
        &format!("/v2/{repo}/manifests/{reference}"),
        &[(
            "accept",
            &format!("{OCI_MANIFEST}, {OCI_INDEX}, {DOCKER_MANIFEST}, {DOCKER_LIST}"),
        )],
        None,
    );
    (r.status == 200).then(|| sha256(&r.body))
}

/// Every blob an image or index needs, compared byte for byte.
fn assert_same_content(from: &Client, to: &Client, repo: &str, to_repo: &str, reference: &str) {
    let accept = format!("{OCI_MANIFEST}, {OCI_INDEX}, {DOCKER_MANIFEST}, {DOCKER_LIST}");
    let a = from.call(
        "GET",
        &format!("/v2/{repo}/manifests/{reference}"),
        &[("accept", &accept)],
        None,
    );
    let b = to.call(
        "GET",
        &format!("/v2/{to_repo}/manifests/{reference}"),
        &[("accept", &accept)],
        None,
    );
    assert_eq!((a.status, b.status), (200, 200), "{repo}:{reference}");
    assert_eq!(a.body, b.body, "{repo}:{reference} manifests differ");
    let m: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
    for child in m["manifests"].as_array().into_iter().flatten() {
        assert_same_content(from, to, repo, to_repo, child["digest"].as_str().unwrap());
    }
    let mut blobs = vec![m["config"].clone()];
    blobs.extend(m["layers"].as_array().into_iter().flatten().cloned());
    for d in blobs.iter().filter_map(|b| b["digest"].as_str()) {
        let x = from.get(&format!("/v2/{repo}/blobs/{d}"));
        let y = to.get(&format!("/v2/{to_repo}/blobs/{d}"));
        assert_eq!((x.status, y.status), (200, 200), "blob {d}");
        assert!(x.body == y.body, "blob {d} differs");
        assert_eq!(sha256(&y.body), d);
    }
}

fn n(summary: &serde_json::Value, key: &str) -> u64 {
    summary[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} in {summary}"))
}

#[test]
fn copies_images_indexes_and_referrers_then_only_what_changed() {
    let (a, b) = (Server::start(), Server::start());
    let (ca, cb) = (Client::new(&a), Client::new(&b));
    let (web, web_digest) = ca.push_image("apps/web", "v1", "web-1");
    ca.push_image("apps/web", "v2", "web-2");
    let multi = push_index(&ca, "apps/multi", "latest");
    let sig = push_referrer(&ca, "apps/web", &web_digest, web.len());
    ca.push_image("scratch/tmp", "x", "not wanted");
    ca.push_image("apps/web", "v1-dev", "dev build");
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "{}rules:\n  - name: apps\n    source: a\n    target: b\n    repositories:\n      include: [\"apps/*\"]\n    tags:\n      exclude: [\"*-dev\"]\n",
        peers(&a.addr, &b.addr)
    );

    // A dry run writes nothing and says what it would do.
    let (code, s, err) = replicate(dir.path(), &yaml, &["--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(s[0]["planned"].as_array().unwrap().len(), 3, "{}", s[0]);
    assert_eq!(digest_of(&cb, "apps/web", "v1"), None);

    let (code, s, err) = replicate(dir.path(), &yaml, &[]);
    assert_eq!(code, 0, "{err}");
    let s = &s[0];
    assert_eq!((n(s, "tags_copied"), n(s, "tags_current")), (3, 0), "{s}");
    assert!(n(s, "blobs_copied") >= 6, "{s}");
    for (repo, tag) in [
        ("apps/web", "v1"),
        ("apps/web", "v2"),
        ("apps/multi", "latest"),
    ] {
        assert_same_content(&ca, &cb, repo, repo, tag);
    }
    assert_eq!(digest_of(&cb, "apps/multi", "latest"), Some(multi));
    // The signature came along with the image it signs.
    let refs = cb
        .get(&format!("/v2/apps/web/referrers/{web_digest}"))
        .json();
    assert_eq!(
        refs["manifests"][0]["digest"].as_str(),
        Some(sig.as_str()),
        "{refs}"
    );
    // Excluded repositories and tags stayed behind.
    let catalog = cb.get("/v2/_catalog").json();
    assert!(!catalog.to_string().contains("scratch"), "{catalog}");
    assert_eq!(digest_of(&cb, "apps/web", "v1-dev"), None);

    // Nothing new: nothing is sent.
    let (code, s, err) = replicate(dir.path(), &yaml, &[]);
    assert_eq!(code, 0, "{err}");
    let s = &s[0];
    assert_eq!(
        (
            n(s, "tags_copied"),
            n(s, "tags_current"),
            n(s, "blobs_copied"),
            n(s, "bytes_copied")
        ),
        (0, 3, 0, 0),
        "{s}"
    );

    // A signature attached later to a tag already copied comes along.
    let sig2 = push_referrer(&ca, "apps/web", &web_digest, web.len());
    let (code, _, err) = replicate(dir.path(), &yaml, &[]);
    assert_eq!(code, 0, "{err}");
    let refs = cb
        .get(&format!("/v2/apps/web/referrers/{web_digest}"))
        .json();
    assert!(refs.to_string().contains(&sig2), "{refs}");

    // A tag moved: only it is copied, and only its new blobs.
    let (_, moved) = ca.push_image("apps/web", "v2", "web-2-rebuilt");
    let (code, s, err) = replicate(dir.path(), &yaml, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        (n(&s[0], "tags_copied"), n(&s[0], "tags_current")),
        (1, 2),
        "{}",
        s[0]
    );
    assert_eq!(n(&s[0], "blobs_copied"), 2, "{}", s[0]);
    assert_eq!(digest_of(&cb, "apps/web", "v2"), Some(moved));
}

#[test]
fn deletes_propagate_only_when_the_rule_says_so() {
    let (a, b) = (Server::start(), Server::start());
    let (ca, cb) = (Client::new(&a), Client::new(&b));
    ca.push_image("r", "keep", "keep");
    ca.push_image("r", "gone", "gone");
    let dir = tempfile::tempdir().unwrap();
    let rule = |deletes: bool| {
        format!(
            "{}rules:\n  - source: a\n    target: b\n    deletes: {deletes}\n",
            peers(&a.addr, &b.addr)
        )
    };
    assert_eq!(replicate(dir.path(), &rule(false), &[]).0, 0);
    ca.call("DELETE", "/v2/r/manifests/gone", &[], None)
        .expect(202, None);
    let (code, s, err) = replicate(dir.path(), &rule(false), &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(n(&s[0], "tags_deleted"), 0);
    assert!(digest_of(&cb, "r", "gone").is_some());
    let (code, s, err) = replicate(dir.path(), &rule(true), &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(n(&s[0], "tags_deleted"), 1, "{}", s[0]);
    assert_eq!(digest_of(&cb, "r", "gone"), None);
    assert!(digest_of(&cb, "r", "keep").is_some());
}

/// Push two images to `a`, replicate them with `store` (a peer read straight
/// from `a`'s storage, given as `key: value`) as the source, and check
/// that `b` holds them under `prefix`.
fn copy_from_storage(a: &Server, b: &Server, store: (&str, &Path), prefix: &str) {
    let (ca, cb) = (Client::new(a), Client::new(b));
    ca.push_image("team/app", "1.0", "read from storage");
    let idx = push_index(&ca, "team/multi", "2.0");
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "peers:\n  store:\n    {}: {}\n  b:\n    url: http://{}\nrules:\n  - source: store\n    target: b\n    prefix: \"{prefix}\"\n",
        store.0,
        store.1.display(),
        b.addr
    );
    let (code, s, err) = replicate(dir.path(), &yaml, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(n(&s[0], "tags_copied"), 2, "{}", s[0]);
    let app = format!("{prefix}team/app");
    assert_same_content(&ca, &cb, "team/app", &app, "1.0");
    assert_eq!(
        digest_of(&cb, &format!("{prefix}team/multi"), "2.0"),
        Some(idx)
    );
}

#[test]
fn a_store_on_disk_is_a_source_and_a_prefix_renames() {
    let (a, b) = (Server::start(), Server::start());
    copy_from_storage(&a, &b, ("path", &a.root), "mirror/");
}

/// A registry's own config.yml names the store to read: a directory in the
/// file-system pass, a bucket in the S3 pass.
#[test]
fn a_registry_config_names_the_store_to_read() {
    let (a, b) = (Server::start(), Server::start());
    copy_from_storage(&a, &b, ("registry_config", &a.config), "");
    // Only a source: a rule may not write to it.
    let yaml = format!(
        "peers:\n  store:\n    registry_config: {}\n  b:\n    url: http://{}\nrules:\n  - source: b\n    target: store\n",
        a.config.display(),
        b.addr
    );
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = replicate(dir.path(), &yaml, &[]);
    assert_ne!(code, 0);
    assert!(err.contains("can only be a source"), "{err}");
}

#[test]
fn to_and_from_distribution() {
    let ours = Server::start();
    let dist = Distribution::start();
    let other = Server::start();
    let (co, cd, cx) = (
        Client::new(&ours),
        Client::for_addr(&dist.addr),
        Client::new(&other),
    );
    co.push_image("lib/app", "1", "for distribution");
    let idx = push_index(&co, "lib/multi", "all");
    // Over 16 MiB: sent in chunks (PATCH with Content-Range) both ways.
    push_layer_image(&co, "lib/big", Some("1"), "big", &noise(20 << 20, 1));
    let dir = tempfile::tempdir().unwrap();
    // Three registries: ours -> Distribution -> another of ours.
    let yaml = format!(
        "peers:\n  ours:\n    url: http://{}\n  dist:\n    url: http://{}\n  other:\n    url: http://{}\nrules:\n  - name: there\n    source: ours\n    target: dist\n  - name: back\n    source: dist\n    target: other\n",
        ours.addr, dist.addr, other.addr
    );
    let (code, s, err) = replicate(dir.path(), &yaml, &[]);
    assert_eq!(code, 0, "{err}\n{s:?}");
    assert_eq!(n(&s[0], "tags_copied"), 3, "{}", s[0]);
    assert_eq!(n(&s[1], "tags_copied"), 3, "{}", s[1]);
    assert_same_content(&co, &cd, "lib/app", "lib/app", "1");
    assert_same_content(&cd, &cx, "lib/big", "lib/big", "1");
    assert_same_content(&cd, &cx, "lib/app", "lib/app", "1");
    assert_eq!(digest_of(&cx, "lib/multi", "all"), Some(idx));
    // Again: Distribution already has it all.
    let (code, s, err) = replicate(dir.path(), &yaml, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!((n(&s[0], "blobs_copied"), n(&s[1], "blobs_copied")), (0, 0));
}

/// A 24 MiB blob goes in 8 MiB chunks; the proxy answers 429 three times
/// and cuts the connection 12 MiB in, mid-chunk. The copy goes on from
/// the offset the target reports, so well under 24 + 12 MiB cross.
#[test]
fn busy_answers_and_a_cut_mid_blob_are_retried_and_resumed() {
    use std::sync::atomic::Ordering;
    let (a, b) = (Server::start(), Server::start());
    let (ca, cb) = (Client::new(&a), Client::new(&b));
    push_layer_image(&ca, "big/app", Some("v1"), "big", &noise(24 << 20, 2));
    let proxy = proxy::FaultProxy::start(
        &b.addr,
        proxy::Faults {
            busy: 3,
            cut_upstream_after: Some(8 << 20),
            ..Default::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "{}rules:\n  - source: a\n    target: b\n",
        peers(&a.addr, &proxy.addr)
    );
    let (code, s, err) = replicate(dir.path(), &yaml, &[]);
    assert_eq!(code, 0, "{err}\n{s:?}");
    assert_eq!(proxy.busy_served.load(Ordering::SeqCst), 3);
    assert_eq!(proxy.cuts.load(Ordering::SeqCst), 1);
    assert_eq!(n(&s[0], "tags_copied"), 1, "{}", s[0]);
    assert_eq!(n(&s[0], "blobs_resumed"), 1, "{}", s[0]);
    let carried = proxy.upstream_bytes.load(Ordering::SeqCst);
    assert!(
        carried < 26 << 20,
        "{carried} bytes crossed: the upload started over"
    );
    assert_same_content(&ca, &cb, "big/app", "big/app", "v1");
    let (code, s, _) = replicate(dir.path(), &yaml, &[]);
    assert_eq!((code, n(&s[0], "blobs_copied")), (0, 0));
}

/// Images of every shape the copy takes: small blobs (one PUT each), a
/// 24 MiB one (PATCHes of 8 MiB), an index; tags that share layers.
fn push_assorted(c: &Client) -> Vec<(&'static str, &'static str)> {
    let shared = noise(1 << 20, 7);
    let mut images = vec![];
    for (tag, seed) in [
        ("v1", 1),
        ("v2", 2),
        ("v3", 3),
        ("v4", 4),
        ("v5", 5),
        ("v6", 6),
    ] {
        let mut layer = shared.clone();
        layer.extend(noise(2 << 20, seed));
        push_layer_image(c, "fleet/app", Some(tag), tag, &layer);
        images.push(("fleet/app", tag));
    }
    for (repo, seed) in [("fleet/tools", 11), ("fleet/db", 13), ("fleet/cache", 14)] {
        push_layer_image(c, repo, Some("1"), repo, &noise(3 << 20, seed));
        images.push((repo, "1"));
    }
    push_layer_image(c, "fleet/big", Some("1"), "big", &noise(24 << 20, 12));
    push_index(c, "fleet/multi", "latest");
    images.extend([("fleet/big", "1"), ("fleet/multi", "latest")]);
    images
}

fn faulty_peers(source: &str, target: &str) -> String {
    format!(
        "peers:\n  a:\n    url: http://{source}\n    retry_for: 60s\n  b:\n    url: http://{target}\n    retry_for: 60s\nrules:\n  - source: a\n    target: b\n"
    )
}

/// Both peers refuse a third of all requests (429 with Retry-After, or
/// 503), the source cuts most of its blob answers in the middle and the
/// target half of the uploads it receives. One pass copies everything:
/// each request is retried on its own, reads go on with Range from the
/// byte reached, uploads from the offset the target reports, and the
/// bytes sent stay close to the bytes needed.
#[test]
fn one_pass_through_refusals_and_cuts_on_both_sides() {
    use misbehaving::{MisbehavingRegistry, Misbehaviour, Tally};
    let (a, b) = (Server::start(), Server::start());
    let (ca, cb) = (Client::new(&a), Client::new(&b));
    let images = push_assorted(&ca);
    let source = MisbehavingRegistry::start(
        &a.addr,
        Misbehaviour {
            refuse: 1.0 / 3.0,
            cut_answers: 0.7,
            seed: 1,
            ..Default::default()
        },
    );
    let target = MisbehavingRegistry::start(
        &b.addr,
        Misbehaviour {
            refuse: 1.0 / 3.0,
            cut_requests: 0.5,
            seed: 2,
            ..Default::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let yaml = faulty_peers(&source.addr, &target.addr);
    let (code, s, err) = replicate(dir.path(), &yaml, &[]);
    let (st, tt) = (&source.tally, &target.tally);
    let g = Tally::get;
    eprintln!(
        "source: {} requests, {} 429, {} 503, {} answers cut; target: {} requests, {} 429, {} 503, {} uploads cut; {} bytes needed, {} sent by the replicator, {} reached the target; {:?}",
        g(&st.requests), g(&st.refused_429), g(&st.refused_503), g(&st.answers_cut),
        g(&tt.requests), g(&tt.refused_429), g(&tt.refused_503), g(&tt.requests_cut),
        s.first().map(|s| n(s, "bytes_copied")).unwrap_or(0),
        s.first().map(|s| n(s, "bytes_sent")).unwrap_or(0),
        g(&tt.bytes_in),
        s.first(),
    );
    assert_eq!(code, 0, "{err}\n{s:?}");
    let s = &s[0];
    assert_eq!(n(s, "tags_copied"), images.len() as u64, "{s}");
    for (repo, tag) in &images {
        assert_same_content(&ca, &cb, repo, repo, tag);
    }
    // The target's store as a whole is sound: no upload cut half way left
    // a blob or link behind that does not check.
    assert_verifies(&b.config);
    // The faults happened, on both sides, and were counted.
    assert!(
        g(&st.refused_429) + g(&st.refused_503) >= 10,
        "source refusals"
    );
    assert!(
        g(&tt.refused_429) + g(&tt.refused_503) >= 10,
        "target refusals"
    );
    assert!(g(&st.answers_cut) >= 2, "source cuts");
    assert!(g(&tt.requests_cut) >= 2, "target cuts");
    assert!(n(s, "requests_retried") >= 20, "{s}");
    // (A cut the proxy made after the replicator had stopped reading, as
    // when the target refused the upload, is not met by a resumed read.)
    assert!(n(s, "reads_resumed") >= 1, "{s}");
    assert!(n(s, "blobs_resumed") >= 1, "{s}");
    // What crossed: every needed byte once, and not much more. A cut
    // upload's bytes before the cut may be lost by the target, which then
    // reports a lower offset; that is the only byte sent twice.
    let needed = n(s, "bytes_copied");
    let reached = g(&tt.bytes_in);
    assert!(reached >= needed, "{reached} < {needed}");
    assert!(
        reached < needed + needed / 2,
        "{reached} bytes reached the target for {needed} needed"
    );
    assert!(n(s, "bytes_sent") >= reached, "{s}");
    // Again: nothing new, whatever the faults.
    let (code, s, err) = replicate(dir.path(), &yaml, &[]);
    assert_eq!(code, 0, "{err}\n{s:?}");
    assert_eq!(
        (n(&s[0], "tags_current"), n(&s[0], "blobs_copied")),
        (images.len() as u64, 0),
        "{}",
        s[0]
    );
}

/// A source that ignores `Range` and cuts its answers: a cut read starts
/// again from the first byte, and what was already passed on is skipped,
/// so the target gets each byte once and the digest still checks.
#[test]
fn a_source_that_ignores_range_is_read_again_from_the_start() {
    use misbehaving::{MisbehavingRegistry, Misbehaviour, Tally};
    let (a, b) = (Server::start(), Server::start());
    let (ca, cb) = (Client::new(&a), Client::new(&b));
    push_layer_image(&ca, "r/big", Some("1"), "big", &noise(24 << 20, 5));
    push_layer_image(&ca, "r/small", Some("1"), "small", &noise(4 << 20, 6));
    let source = MisbehavingRegistry::start(
        &a.addr,
        Misbehaviour {
            cut_answers: 0.6,
            ignore_range: true,
            seed: 3,
            ..Default::default()
        },
    );
    let target = MisbehavingRegistry::start(&b.addr, Misbehaviour::default());
    let dir = tempfile::tempdir().unwrap();
    let (code, s, err) = replicate(dir.path(), &faulty_peers(&source.addr, &target.addr), &[]);
    assert_eq!(code, 0, "{err}\n{s:?}");
    let s = &s[0];
    let cuts = Tally::get(&source.tally.answers_cut);
    assert!(cuts >= 1, "no answer was cut");
    assert_eq!(n(s, "reads_resumed"), cuts, "{s}");
    assert_same_content(&ca, &cb, "r/big", "r/big", "1");
    assert_same_content(&ca, &cb, "r/small", "r/small", "1");
    // Read again from the start: more came from the source than was needed,
    // but the target got each blob byte once (and two small manifests).
    let needed = n(s, "bytes_copied");
    assert!(n(s, "bytes_received") > needed, "{s}");
    let reached = Tally::get(&target.tally.bytes_in);
    assert!(
        (needed..needed + (16 << 10)).contains(&reached),
        "{reached} bytes reached the target for {needed} needed"
    );
    assert_eq!(n(s, "bytes_sent"), needed, "{s}");
}

/// A target that is always busy: the pass gives up after `retry_for`,
/// naming the request and the tries, instead of waiting for ever.
#[test]
fn a_peer_busy_for_longer_than_retry_for_fails_in_bounded_time() {
    use misbehaving::{MisbehavingRegistry, Misbehaviour};
    let (a, b) = (Server::start(), Server::start());
    Client::new(&a).push_image("r", "t", "busy");
    let target = MisbehavingRegistry::start(
        &b.addr,
        Misbehaviour {
            refuse: 1.0,
            ..Default::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "peers:\n  a:\n    url: http://{}\n  b:\n    url: http://{}\n    retry_for: 3s\nrules:\n  - source: a\n    target: b\n",
        a.addr, target.addr
    );
    let started = std::time::Instant::now();
    let (code, s, err) = replicate(dir.path(), &yaml, &[]);
    let took = started.elapsed();
    assert_eq!(code, 1, "{err}");
    let failed = s[0]["failed"].to_string();
    assert!(
        failed.contains("r:t") && failed.contains("gave up after"),
        "{failed}"
    );
    assert!(took < Duration::from_secs(30), "took {took:?}");
    assert!(n(&s[0], "requests_retried") >= 2, "{}", s[0]);
}

#[test]
fn an_unreachable_target_fails_the_run_and_names_what_is_missing() {
    let a = Server::start();
    Client::new(&a).push_image("r", "t", "stranded");
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let dir = tempfile::tempdir().unwrap();
    // Each request is retried for 2 s; then the peer counts as down and
    // the other requests fail at their first fault.
    let yaml = format!(
        "{}    retry_for: 2s\nrules:\n  - source: a\n    target: b\n",
        peers(&a.addr, &dead)
    );
    let (code, s, err) = replicate(dir.path(), &yaml, &[]);
    assert_eq!(code, 1, "{err}");
    let failed = s[0]["failed"].to_string();
    assert!(failed.contains("r:t"), "{failed}");
    assert_eq!(n(&s[0], "tags_copied"), 0);
}

#[test]
fn bad_files_are_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = replicate(
        dir.path(),
        "peers:\n  a:\n    url: http://127.0.0.1:1\nrules:\n  - source: a\n    target: nowhere\n",
        &[],
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("rules[0].target: no peer named \"nowhere\""),
        "{err}"
    );
}

#[test]
fn a_target_with_token_auth_is_logged_into_through_its_realm() {
    let dir = tempfile::tempdir().unwrap();
    let signer = pki::TokenSigner::new(dir.path(), "tokens");
    let bundle = signer.bundle.clone();
    let service = pki::token_service(signer);
    let a = Server::start();
    let b = Server::start_with(Opts {
        extra: format!(
            "auth:\n  token:\n    realm: http://{service}/token\n    service: registry.test\n    issuer: test-issuer\n    rootcertbundle: {}\n",
            bundle.display()
        ),
        ..Opts::default()
    });
    let ca = Client::new(&a);
    ca.push_image("team/app", "1", "behind tokens");
    let file = |password: &str| {
        format!(
            "peers:\n  a:\n    url: http://{}\n  b:\n    url: http://{}\n    username: robot\n    password: {password}\nrules:\n  - source: a\n    target: b\n",
            a.addr, b.addr
        )
    };
    let (code, s, err) = replicate(dir.path(), &file("secret"), &[]);
    assert_eq!(code, 0, "{err}\n{s:?}");
    assert_eq!(n(&s[0], "tags_copied"), 1, "{}", s[0]);
    // Anonymous readers are refused; the copy is there for a token holder.
    Client::new(&b)
        .get("/v2/team/app/manifests/1")
        .expect(401, None);
    let (code, s, err) = replicate(dir.path(), &file("secret"), &[]);
    assert_eq!((code, n(&s[0], "tags_current")), (0, 1), "{err}");
    // A wrong password: the run fails and says why.
    let t = std::time::Instant::now();
    let (code, s, _) = replicate(dir.path(), &file("wrong"), &[]);
    assert_eq!(code, 1);
    let failed = s[0]["failed"].to_string();
    assert!(
        failed.contains("token service") && failed.contains("401"),
        "{failed}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "a refused login was retried"
    );
}

#[test]
fn the_daemon_follows_a_store_on_disk_serves_metrics_and_stops_on_sigterm() {
    use std::io::BufRead;
    let (a, b) = (Server::start(), Server::start());
    let (ca, cb) = (Client::new(&a), Client::new(&b));
    ca.push_image("app", "1", "first");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("replication.yml");
    // An hour between passes: only the watch on the store can bring tag 2.
    std::fs::write(
        &file,
        format!(
            "peers:\n  disk:\n    path: {}\n  b:\n    url: http://{}\nrules:\n  - name: follow\n    source: disk\n    target: b\n    interval: 1h\n",
            a.root.display(),
            b.addr
        ),
    )
    .unwrap();
    let mut daemon = Command::new(REPLICATE)
        .arg(&file)
        .args(["--metrics", "127.0.0.1:0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = daemon.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let metrics_addr = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the daemon names its metrics address");
        if let Some(at) = line.strip_prefix("metrics on ") {
            break at.trim().to_string();
        }
    };
    let wait_for = |tag: &str| {
        let until = std::time::Instant::now() + Duration::from_secs(15);
        while std::time::Instant::now() < until {
            if digest_of(&cb, "app", tag).is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    };
    assert!(wait_for("1"), "the first pass did not copy app:1");
    let (_, d2) = ca.push_image("app", "2", "second");
    assert!(
        wait_for("2"),
        "a new tag in the store was not copied within 15 s"
    );
    assert_eq!(digest_of(&cb, "app", "2"), Some(d2));
    let text = ureq::get(&format!("http://{metrics_addr}/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}{{rule=\"follow\"}} ")))
            .unwrap_or_else(|| panic!("{name} missing in\n{text}"))
            .parse()
            .unwrap()
    };
    assert!(value("registry_replicate_passes_total") >= 2.0, "{text}");
    assert_eq!(value("registry_replicate_backlog"), 0.0, "{text}");
    assert_eq!(value("registry_replicate_tags_copied_total"), 2.0, "{text}");
    assert!(value("registry_replicate_lag_seconds") < 15.0, "{text}");
    // No faults here: every byte sent once, nothing retried or resumed.
    let copied = value("registry_replicate_bytes_copied_total");
    assert!(copied > 0.0, "{text}");
    assert_eq!(
        value("registry_replicate_bytes_sent_total"),
        copied,
        "{text}"
    );
    for name in [
        "registry_replicate_requests_retried_total",
        "registry_replicate_reads_resumed_total",
        "registry_replicate_uploads_resumed_total",
    ] {
        assert_eq!(value(name), 0.0, "{name}: {text}");
    }
    // SIGTERM: the daemon finishes and exits cleanly.
    Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status()
        .unwrap();
    let until = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = daemon.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        if std::time::Instant::now() > until {
            let _ = daemon.kill();
            let _ = daemon.wait();
            panic!("the daemon did not stop within 10 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_blob_shared_by_repositories_crosses_once_and_is_mounted_for_the_others() {
    let (a, b) = (Server::start(), Server::start());
    let ca = Client::new(&a);
    let layer = noise(3 << 20, 3);
    for repo in ["shared/one", "shared/two", "shared/three"] {
        push_layer_image(&ca, repo, Some("1"), repo, &layer);
    }
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "{}rules:\n  - source: a\n    target: b\n",
        peers(&a.addr, &b.addr)
    );
    let (code, s, err) = replicate(dir.path(), &yaml, &[]);
    assert_eq!(code, 0, "{err}");
    let s = &s[0];
    // Three configs and one layer sent; the layer mounted twice.
    assert_eq!((n(s, "blobs_copied"), n(s, "blobs_mounted")), (4, 2), "{s}");
    for repo in ["shared/one", "shared/two", "shared/three"] {
        assert_same_content(&ca, &Client::new(&b), repo, repo, "1");
    }
}

#[test]
fn a_bandwidth_limit_paces_blob_bytes() {
    let (a, b) = (Server::start(), Server::start());
    let ca = Client::new(&a);
    push_layer_image(&ca, "slow/app", Some("1"), "slow", &noise(6 << 20, 4));
    let dir = tempfile::tempdir().unwrap();
    // 6 MiB at 2 MiB/s: at least about 3 s, however fast the machine.
    let yaml = format!(
        "peers:\n  a:\n    url: http://{}\n  b:\n    url: http://{}\n    bandwidth: 2MiB\nrules:\n  - source: a\n    target: b\n",
        a.addr, b.addr
    );
    let t = std::time::Instant::now();
    let (code, s, err) = replicate(dir.path(), &yaml, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(n(&s[0], "blobs_copied"), 2, "{}", s[0]);
    assert!(
        t.elapsed() >= Duration::from_millis(2500),
        "6 MiB at 2 MiB/s took {:?}",
        t.elapsed()
    );
    assert_same_content(&ca, &Client::new(&b), "slow/app", "slow/app", "1");
    let (code, _, err) = replicate(dir.path(), &yaml.replace("2MiB", "fast"), &[]);
    assert_eq!(code, 2);
    assert!(err.contains("peers.b.bandwidth"), "{err}");
}

#[test]
fn a_once_run_stopped_by_sigterm_fails() {
    let (a, b) = (Server::start(), Server::start());
    let ca = Client::new(&a);
    for (i, repo) in ["s/one", "s/two", "s/three"].into_iter().enumerate() {
        push_layer_image(&ca, repo, Some("1"), repo, &noise(2 << 20, 10 + i as u32));
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("replication.yml");
    // 1 MiB/s with one repository at a time: about 6 s in all.
    std::fs::write(
        &file,
        format!(
            "peers:\n  a:\n    url: http://{}\n    concurrency: 1\n  b:\n    url: http://{}\n    bandwidth: 1MiB\nrules:\n  - source: a\n    target: b\n",
            a.addr, b.addr
        ),
    )
    .unwrap();
    let child = Command::new(REPLICATE)
        .arg(&file)
        .args(["--once", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "a stopped run must not pass");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("stopped by a signal"), "{stdout}");
}
