//! Notifications against a real HTTP endpoint: Distribution's envelope and
//! fields for pushes, pulls, mounts and deletes; delivery in order through
//! an endpoint that fails for a while; what each endpoint ignores.

use crate::auth::htpasswd_server;
use crate::support::receiver::Receiver;
use crate::support::*;

fn endpoint(name: &str, url: &str, extra: &str) -> String {
    format!("    - name: {name}\n      url: {url}\n{extra}")
}

fn notifications(endpoints: &[String]) -> String {
    format!("notifications:\n  endpoints:\n{}", endpoints.concat())
}

fn of<'a>(events: &'a [serde_json::Value], action: &str) -> Vec<&'a serde_json::Value> {
    events.iter().filter(|e| e["action"] == action).collect()
}

#[test]
fn events_of_pushes_pulls_mounts_and_deletes() {
    let r = Receiver::start(0);
    let dir = tempfile::tempdir().unwrap();
    let extra = endpoint(
        "pipeline",
        &r.url,
        "      headers:\n        Authorization: [Bearer s3cret]\n      timeout: 2s\n",
    );
    let (s, _) = htpasswd_server(dir.path(), &[("ci", "pw")], &notifications(&[extra]));
    let c = Client::new(&s).basic("ci", "pw");

    let (manifest, digest) = c.push_image("team/app", "v1", "one");
    let events = r.wait_for(3);
    let pushes = of(&events, "push");
    assert_eq!(pushes.len(), 3, "config, layer, manifest: {events:#?}");
    let m = pushes[2];
    assert_eq!(m["target"]["mediaType"], OCI_MANIFEST);
    assert_eq!(m["target"]["digest"], digest);
    assert_eq!(m["target"]["size"], manifest.len());
    assert_eq!(m["target"]["length"], manifest.len());
    assert_eq!(m["target"]["repository"], "team/app");
    assert_eq!(m["target"]["tag"], "v1");
    assert_eq!(
        m["target"]["url"],
        format!("http://{}/v2/team/app/manifests/{digest}", s.addr)
    );
    assert_eq!(m["actor"]["name"], "ci");
    assert_eq!(m["request"]["method"], "PUT");
    assert_eq!(m["request"]["host"], s.addr);
    assert!(m["request"]["addr"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    assert!(m["request"]["useragent"].is_string());
    assert!(m["source"]["instanceID"].as_str().unwrap().len() == 36);
    assert!(m["source"]["addr"].as_str().unwrap().contains(':'));
    assert_eq!(m["id"].as_str().unwrap().len(), 36);
    let blob = pushes[0];
    assert_eq!(blob["target"]["mediaType"], "application/octet-stream");
    assert!(blob["target"]["size"].as_u64().unwrap() > 0);
    assert!(blob["target"]["url"]
        .as_str()
        .unwrap()
        .contains("/v2/team/app/blobs/sha256:"));
    for (ct, auth) in r
        .headers("content-type")
        .iter()
        .zip(r.headers("authorization"))
    {
        assert_eq!(ct, "application/vnd.docker.distribution.events.v1+json");
        assert_eq!(auth, "Bearer s3cret");
    }

    // Pulls: a manifest by tag, a blob; a failed pull announces nothing.
    c.get("/v2/team/app/manifests/v1").expect(200, None);
    let layer = serde_json::from_slice::<serde_json::Value>(&manifest).unwrap()["layers"][0]
        ["digest"]
        .as_str()
        .unwrap()
        .to_string();
    c.get(&format!("/v2/team/app/blobs/{layer}"))
        .expect(200, None);
    c.get("/v2/team/app/manifests/nope").expect(404, None);
    let events = r.wait_for(5);
    let pulls = of(&events, "pull");
    assert_eq!(pulls.len(), 2, "{events:#?}");
    assert_eq!(pulls[0]["target"]["tag"], "v1");
    assert_eq!(pulls[0]["target"]["digest"], digest);
    assert_eq!(pulls[0]["request"]["method"], "GET");
    assert_eq!(pulls[1]["target"]["digest"], layer);

    // A mount from another repository, then deletes.
    c.call(
        "POST",
        &format!("/v2/team/other/blobs/uploads/?mount={layer}&from=team/app"),
        &[],
        None,
    )
    .expect(201, None);
    c.call(
        "DELETE",
        &format!("/v2/team/app/manifests/{digest}"),
        &[],
        None,
    )
    .expect(202, None);
    let events = r.wait_for(8);
    let mount = of(&events, "mount")[0];
    assert_eq!(mount["target"]["repository"], "team/other");
    assert_eq!(mount["target"]["fromRepository"], "team/app");
    assert_eq!(mount["target"]["digest"], layer);
    let deletes = of(&events, "delete");
    assert_eq!(deletes.len(), 2, "the manifest and its tag: {events:#?}");
    assert_eq!(deletes[0]["target"]["digest"], digest);
    assert_eq!(deletes[1]["target"]["tag"], "v1");
    assert!(deletes[0]["target"].get("url").is_none());
}

#[test]
fn an_endpoint_down_for_a_while_gets_every_event_in_order() {
    // Five POSTs refused: past the threshold of 2, retries wait 200ms.
    let r = Receiver::start(5);
    let extra = endpoint(
        "flaky",
        &r.url,
        "      threshold: 2\n      backoff: 200ms\n",
    );
    let s = Server::start_with(Opts {
        extra: notifications(&[extra]),
        ..Opts::default()
    });
    let c = Client::new(&s);
    let mut digests = vec![];
    for i in 0..4 {
        digests.push(c.push_image("team/app", &format!("v{i}"), &i.to_string()).1);
    }
    let events = r.wait_for(12);
    assert_eq!(events.len(), 12, "nothing twice, nothing lost");
    let manifests: Vec<&str> = of(&events, "push")
        .iter()
        .filter(|e| e["target"]["mediaType"] == OCI_MANIFEST)
        .map(|e| e["target"]["digest"].as_str().unwrap())
        .collect();
    assert_eq!(manifests, digests, "in the order they happened");
    assert_eq!(r.refused.load(std::sync::atomic::Ordering::SeqCst), 5);
    let metrics = String::from_utf8(c.get("/metrics").body).unwrap();
    assert!(
        metrics.contains("registry_notifications_failures_total{endpoint=\"flaky\"} 5"),
        "{metrics}"
    );
    assert!(
        metrics.contains("registry_notifications_events_sent_total{endpoint=\"flaky\"} 12"),
        "{metrics}"
    );
    assert!(metrics.contains("registry_notifications_pending{endpoint=\"flaky\"} 0"));
}

#[test]
fn events_an_endpoint_rejects_are_dropped_after_the_threshold() {
    // 400 to the first three POSTs: the events themselves are refused.
    let r = Receiver::start_refusing(3, http::StatusCode::BAD_REQUEST);
    let extra = endpoint("picky", &r.url, "      threshold: 3\n      backoff: 50ms\n");
    let s = Server::start_with(Opts {
        extra: notifications(&[extra]),
        ..Opts::default()
    });
    let c = Client::new(&s);
    c.push_blob("team/app", b"first");
    // Once the first is dropped, later events flow.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while metric_of(
        &s,
        "registry_notifications_events_dropped_total{endpoint=\"picky\"}",
    ) == 0
    {
        assert!(std::time::Instant::now() < deadline, "never dropped");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let second = c.push_blob("team/app", b"second");
    let events = r.wait_for(1);
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0]["target"]["digest"], second);
}

fn metric_of(s: &Server, series: &str) -> u64 {
    String::from_utf8(Client::new(s).get("/metrics").body)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn each_endpoint_ignores_what_it_is_told_to() {
    let (no_pulls, no_blobs, off) = (Receiver::start(0), Receiver::start(0), Receiver::start(0));
    let s = Server::start_with(Opts {
        extra: notifications(&[
            endpoint(
                "no-pulls",
                &no_pulls.url,
                "      ignore:\n        actions: [pull]\n",
            ),
            endpoint(
                "no-blobs",
                &no_blobs.url,
                "      ignoredmediatypes: [application/octet-stream]\n",
            ),
            endpoint("off", &off.url, "      disabled: true\n"),
        ]),
        ..Opts::default()
    });
    let c = Client::new(&s);
    c.push_image("team/app", "v1", "one");
    c.get("/v2/team/app/manifests/v1").expect(200, None);
    // A marker both wanting endpoints receive last.
    c.call("DELETE", "/v2/team/app/manifests/v1", &[], None)
        .expect(202, None);
    let a = no_pulls.wait_for(4);
    assert!(of(&a, "pull").is_empty(), "{a:#?}");
    assert_eq!(of(&a, "push").len(), 3);
    let b = no_blobs.wait_for(3);
    assert_eq!(b.len(), 3, "manifest push, pull, delete: {b:#?}");
    assert!(b
        .iter()
        .all(|e| e["target"]["mediaType"] != "application/octet-stream"));
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(off.events().is_empty(), "a disabled endpoint gets nothing");
}

#[test]
fn a_tag_deleted_on_the_web_page_is_announced() {
    let r = Receiver::start(0);
    let s = Server::start_with(Opts {
        extra: notifications(&[endpoint(
            "web",
            &r.url,
            "      ignore:\n        actions: [push, pull]\n",
        )]),
        ..Opts::default()
    });
    let c = Client::new(&s);
    c.push_image("team/app", "v1", "one");
    let page = String::from_utf8(c.get("/ui/delete/team/app/v1").body).unwrap();
    let field = |name: &str| {
        page.split(&format!("name=\"{name}\" value=\""))
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .to_string()
    };
    let form = format!("digest={}&token={}", field("digest"), field("token"));
    c.call(
        "POST",
        "/ui/delete/team/app/v1",
        &[("content-type", "application/x-www-form-urlencoded")],
        Some(form.as_bytes()),
    )
    .expect(303, None);
    let events = r.wait_for(1);
    assert_eq!(events[0]["action"], "delete");
    assert_eq!(events[0]["target"]["tag"], "v1");
    assert_eq!(events[0]["request"]["method"], "POST");
}

#[test]
fn endpoint_mistakes_stop_the_start_with_their_name() {
    for (extra, want) in [
        (
            "    - name: x\n      url: ftp://h/e\n",
            "must start with http:// or https://",
        ),
        (
            "    - name: x\n",
            "notifications.endpoints[0].url is required",
        ),
        (
            "    - name: x\n      url: http://h/\n      timeot: 1s\n",
            "unknown key \"timeot\"",
        ),
        (
            "    - name: x\n      url: http://h/\n      ignore:\n        actions: [pul]\n",
            "is not push, pull, mount or delete",
        ),
        (
            "    - name: x\n      url: http://h/\n      timeout: soon\n",
            "notifications.endpoints[0].timeout",
        ),
    ] {
        let out = refused_start(&format!("notifications:\n  endpoints:\n{extra}"));
        assert!(out.contains(want), "{want} not in: {out}");
    }
}
