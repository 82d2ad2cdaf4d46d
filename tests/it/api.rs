//! The base endpoint, fixed headers, routing errors, listings.

use crate::support::*;

#[test]
fn base_endpoint_and_fixed_headers() {
    let s = Server::start_with(Opts {
        extra: "  headers:\n    X-Content-Type-Options: [nosniff]\n".into(),
        ..Opts::default()
    });
    let c = Client::new(&s);
    let r = c.get("/v2/");
    r.expect(200, None);
    assert_eq!(
        r.header("docker-distribution-api-version"),
        Some("registry/2.0")
    );
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(r.json(), serde_json::json!({}));
    // Every response carries the API version header, errors included.
    let r = c.get("/v2/nope/nope/nothing");
    r.expect(404, Some("UNSUPPORTED"));
    assert_eq!(
        r.header("docker-distribution-api-version"),
        Some("registry/2.0")
    );
    c.call("POST", "/v2/_catalog", &[], Some(b""))
        .expect(405, Some("UNSUPPORTED"));
    c.call("DELETE", "/v2/", &[], None)
        .expect(405, Some("UNSUPPORTED"));
}

#[test]
fn invalid_names_are_name_invalid() {
    let s = Server::start();
    let c = Client::new(&s);
    let long = "a".repeat(256);
    for name in ["UPPER", "a//b", "-a", "a_", "a%2fb", long.as_str()] {
        c.get(&format!("/v2/{name}/tags/list"))
            .expect(400, Some("NAME_INVALID"));
        c.call(
            "POST",
            &format!("/v2/{name}/blobs/uploads/"),
            &[],
            Some(b""),
        )
        .expect(400, Some("NAME_INVALID"));
    }
    // Dot segments, raw or percent-encoded, sent as-is (an HTTP client
    // library would normalise them away): never a file outside the root.
    for path in [
        "/v2/../tags/list",
        "/v2/a/../../../../etc/tags/list",
        "/v2/%2e%2e/%2e%2e/etc/tags/list",
        "/v2/a/%2E%2E/b/blobs/uploads/",
    ] {
        let status = raw_status(&s.addr, "GET", path);
        assert_eq!(status, 400, "{path}");
    }
    let status = raw_status(&s.addr, "GET", "/v2/r/blobs/uploads/..%2F..%2Fetc");
    assert_eq!(status, 404);
}

#[test]
fn catalog_and_tags_sorted_and_paginated() {
    let s = Server::start_with(Opts {
        extra: "catalog:\n  maxentries: 3\n".into(),
        ..Opts::default()
    });
    let c = Client::new(&s);
    for repo in ["zeta", "alpha/one", "alpha/one/two/three", "mid", "beta"] {
        c.push_image(repo, "v1", repo);
    }
    for tag in ["b", "a", "c", "A", "_x"] {
        c.push_image("mid", tag, tag);
    }
    // maxentries caps the page and a Link leads on.
    let r = c.get("/v2/_catalog");
    r.expect(200, None);
    assert_eq!(
        r.json()["repositories"],
        serde_json::json!(["alpha/one", "alpha/one/two/three", "beta"])
    );
    let link = r.header("link").expect("Link header").to_string();
    assert_eq!(link, "</v2/_catalog?last=beta&n=3>; rel=\"next\"");
    let r = c.get("/v2/_catalog?last=beta&n=3");
    assert_eq!(r.json()["repositories"], serde_json::json!(["mid", "zeta"]));
    assert!(r.header("link").is_none());
    let r = c.get("/v2/_catalog?n=1&last=alpha/one");
    assert_eq!(
        r.json()["repositories"],
        serde_json::json!(["alpha/one/two/three"])
    );
    c.get("/v2/_catalog?n=x")
        .expect(400, Some("PAGINATION_NUMBER_INVALID"));

    let r = c.get("/v2/mid/tags/list");
    assert_eq!(r.json()["name"], "mid");
    assert_eq!(
        r.json()["tags"],
        serde_json::json!(["A", "_x", "a", "b", "c", "v1"])
    );
    let r = c.get("/v2/mid/tags/list?n=2");
    assert_eq!(r.json()["tags"], serde_json::json!(["A", "_x"]));
    assert_eq!(
        r.header("link"),
        Some("</v2/mid/tags/list?last=_x&n=2>; rel=\"next\"")
    );
    let r = c.get("/v2/mid/tags/list?n=2&last=b");
    assert_eq!(r.json()["tags"], serde_json::json!(["c", "v1"]));
    assert!(r.header("link").is_none());
    let r = c.get("/v2/mid/tags/list?n=0");
    assert_eq!(r.json()["tags"], serde_json::json!([]));
    c.get("/v2/unknown/tags/list")
        .expect(404, Some("NAME_UNKNOWN"));
}

#[test]
fn index_is_rebuilt_from_disk_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    {
        let s = Server::start_at(&root, Opts::default());
        let c = Client::new(&s);
        c.push_image("a/b/c/d", "one", "1");
        c.push_image("a/b/c/d", "two", "2");
        c.push_image("x", "latest", "3");
    }
    let s = Server::start_at(&root, Opts::default());
    let c = Client::new(&s);
    assert_eq!(
        c.get("/v2/_catalog").json()["repositories"],
        serde_json::json!(["a/b/c/d", "x"])
    );
    assert_eq!(
        c.get("/v2/a/b/c/d/tags/list").json()["tags"],
        serde_json::json!(["one", "two"])
    );
}

#[test]
fn http_prefix_and_relative_urls() {
    let s = Server::start_with(Opts {
        extra: "  prefix: /registry\n  relativeurls: true\n".into(),
        ..Opts::default()
    });
    let c = Client::new(&s);
    c.get("/v2/").expect(404, None);
    c.get("/registry/v2/").expect(200, None);
    let r = c.call("POST", "/registry/v2/p/blobs/uploads/", &[], Some(b""));
    r.expect(202, None);
    let loc = r.header("location").unwrap();
    assert!(loc.starts_with("/registry/v2/p/blobs/uploads/"), "{loc}");
}

#[test]
fn absolute_location_uses_http_host() {
    let s = Server::start_with(Opts {
        extra: "  host: https://registry.example.com\n".into(),
        ..Opts::default()
    });
    let c = Client::new(&s);
    let r = c.call("POST", "/v2/p/blobs/uploads/", &[], Some(b""));
    let loc = r.header("location").unwrap();
    assert!(
        loc.starts_with("https://registry.example.com/v2/p/blobs/uploads/"),
        "{loc}"
    );
}

#[test]
fn health_readiness_and_metrics() {
    let s = Server::start();
    let c = Client::new(&s);
    let r = c.get("/healthz");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"ok\n"[..]));
    c.get("/readyz").expect(200, None);
    c.get("/v2/").expect(200, None);
    c.get("/v2/").expect(200, None);
    c.push_blob("m", &vec![7u8; 5000]);
    c.get("/v2/nope/manifests/latest").expect(404, None);
    let text = String::from_utf8(c.get("/metrics").body).unwrap();
    for line in [
        "registry_http_requests_total{route=\"base\",method=\"GET\",status=\"200\"} 2",
        "registry_http_requests_total{route=\"blob_upload\",method=\"POST\",status=\"201\"} 1",
        "registry_http_requests_total{route=\"manifest\",method=\"GET\",status=\"404\"} 1",
        "registry_http_request_duration_seconds_count{route=\"base\"} 2",
        "registry_uploads_in_progress 0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    let received: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("registry_http_received_bytes_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(received >= 5000, "{received}");
    // The storage root gone: not ready, still alive.
    std::fs::rename(s.root.join("docker"), s.root.join("moved")).unwrap();
    c.get("/readyz").expect(503, None);
    c.get("/healthz").expect(200, None);
}

#[test]
fn metrics_move_to_the_debug_address() {
    let s = Server::start_with(Opts {
        extra: "  debug:\n    addr: 127.0.0.1:0\n    prometheus:\n      enabled: true\n      path: /prom\n".into(),
        ..Opts::default()
    });
    let line = s
        .log
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("the debug address is logged after the API's");
    let at = line.find("operators' endpoints on ").expect(&line) + "operators' endpoints on ".len();
    let debug: String = line[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || ".:".contains(*c))
        .collect();
    let c = Client::new(&s);
    c.get("/v2/").expect(200, None);
    // Off the public port; health checks stay on both.
    c.get("/metrics").expect(404, None);
    c.get("/healthz").expect(200, None);
    let get = |path: &str| {
        let r = ureq::get(&format!("http://{debug}{path}")).call();
        match r {
            Ok(r) => (r.status(), r.into_string().unwrap()),
            Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap()),
            Err(e) => panic!("{e}"),
        }
    };
    let (status, text) = get("/prom");
    assert_eq!(status, 200);
    assert!(
        text.contains(
            "registry_http_requests_total{route=\"base\",method=\"GET\",status=\"200\"} 1"
        ),
        "{text}"
    );
    assert_eq!(get("/readyz").0, 200);
    assert_eq!(get("/metrics").0, 404);
    assert_eq!(get("/v2/").0, 404);
}

#[test]
fn each_request_is_logged_inside_its_span() {
    let s = Server::start();
    let c = Client::new(&s);
    c.get("/v2/nope/tags/list").expect(404, None);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut seen = vec![];
    while std::time::Instant::now() < deadline {
        let Ok(line) = s.log.recv_timeout(std::time::Duration::from_millis(200)) else {
            continue;
        };
        if line.contains("registry::access") {
            assert!(
                line.contains("request{id=1 route=\"tags\"}"),
                "access line outside its span: {line}"
            );
            assert!(line.contains("http.response.status=404"), "{line}");
            assert!(
                line.contains("http.request.uri=/v2/nope/tags/list"),
                "{line}"
            );
            return;
        }
        seen.push(line);
    }
    panic!("no access log line in:\n{}", seen.join("\n"));
}
