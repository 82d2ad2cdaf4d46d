//! `docker search`'s endpoints and the web page, over HTTP against the real
//! server: answers, rights, paging, escaping, logins and deletes. The
//! browser's view is in `browser`; the real docker and podman clients are
//! in the end-to-end scripts.

use crate::auth::{htpasswd_server, write_htpasswd};
use crate::support::*;

/// Anonymous may pull `public/*`; alice may do everything.
pub(crate) const RULES: &str = "access:
  rules:
    - repositories: [\"public/*\"]
      users: [anonymous]
      actions: [pull]
    - repositories: [\"*\"]
      users: [alice]
      actions: [\"*\"]
";

fn names(v: &serde_json::Value) -> Vec<String> {
    v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect()
}

fn text(r: &Resp) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

#[test]
fn search_answers_as_docker_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = htpasswd_server(dir.path(), &[("alice", "pw")], RULES);
    let alice = Client::new(&s).basic("alice", "pw");
    for repo in [
        "public/nginx",
        "public/nginx-proxy",
        "private/nginx",
        "public/web-nginx",
        "nginx",
    ] {
        alice.push_image(repo, "v1", repo);
    }
    let c = Client::new(&s);
    let ping = c.get("/v1/_ping");
    ping.expect(200, None);
    assert_eq!(ping.header("x-docker-registry-standalone"), Some("true"));
    assert_eq!(ping.json()["standalone"], true);

    // What `docker search` sends when not logged in: empty Basic.
    let anon = c.with_authorization("Basic Og==");
    let r = anon.get("/v1/search?q=nginx&n=25");
    r.expect(200, None);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    assert_eq!(
        names(&v),
        ["public/nginx", "public/nginx-proxy", "public/web-nginx"],
        "what anonymous may pull, component matches before substrings"
    );
    assert_eq!(
        (v["query"].as_str(), v["num_results"].as_u64()),
        (Some("nginx"), Some(3))
    );
    for r in v["results"].as_array().unwrap() {
        assert_eq!(r["description"], "");
        assert_eq!(r["star_count"], 0);
        assert_eq!(r["is_official"], false);
        assert_eq!(r["is_automated"], false);
    }
    // No Authorization at all (podman) is the same.
    assert_eq!(names(&c.get("/v1/search?q=nginx").json()).len(), 3);

    // Logged in: everything alice may pull, exact match first, `n` honoured.
    let v = alice.get("/v1/search?q=nginx&n=2").json();
    assert_eq!(names(&v), ["nginx", "private/nginx"]);
    assert_eq!(
        (
            v["num_results"].as_u64(),
            v["page_size"].as_u64(),
            v["num_pages"].as_u64()
        ),
        (Some(5), Some(2), Some(3))
    );
    let v = alice.get("/v1/search?q=nginx&n=2&page=3").json();
    assert_eq!(names(&v), ["public/web-nginx"]);
    assert_eq!(v["page"], 3);
    // Slashes are part of the name; no match is an empty list.
    assert_eq!(
        names(&alice.get("/v1/search?q=c%2Fng").json()),
        ["public/nginx", "public/nginx-proxy"]
    );
    assert!(names(&alice.get("/v1/search?q=redis").json()).is_empty());

    // Mistakes are JSON errors, never HTML.
    for bad in [
        "/v1/search?q=x&n=0",
        "/v1/search?q=x&n=101",
        "/v1/search?q=x&n=ten",
        "/v1/search?page=0",
    ] {
        let r = alice.get(bad);
        r.expect(400, Some("PAGINATION_NUMBER_INVALID"));
        assert_eq!(r.header("content-type"), Some("application/json"), "{bad}");
    }
    let r = c.basic("alice", "wrong").get("/v1/search?q=nginx");
    r.expect(401, Some("UNAUTHORIZED"));
    for (method, path, status) in [
        ("GET", "/v1/repositories/x/images", 404),
        ("GET", "/v1/", 404),
        ("POST", "/v1/search", 405),
    ] {
        let r = c.call(method, path, &[], None);
        assert_eq!(r.status, status, "{method} {path}");
        assert_eq!(
            r.header("content-type"),
            Some("application/json"),
            "{method} {path}"
        );
        assert!(!text(&r).contains('<'), "{path}: {}", text(&r));
    }
}

#[test]
fn search_takes_basic_beside_tokens_as_anonymous() {
    // With token logins, no password can be checked: Basic is anonymous,
    // and an open registry shows everything.
    let s = Server::start();
    let c = Client::new(&s);
    c.push_image("team/app", "1", "a");
    let v = c
        .basic("someone", "anything")
        .get("/v1/search?q=app")
        .json();
    assert_eq!(names(&v), ["team/app"]);
}

fn cookie_of(r: &Resp) -> String {
    let set = r.header("set-cookie").expect("a session cookie");
    set.split(';').next().unwrap().to_string()
}

/// Sign in through the form; the session cookie to send back.
fn sign_in(c: &Client, user: &str, password: &str) -> String {
    let body = format!("username={user}&password={password}&next=%2Fui%2Frepo%2Fprivate%2Fapp");
    let r = c.call(
        "POST",
        "/ui/login",
        &[("content-type", "application/x-www-form-urlencoded")],
        Some(body.as_bytes()),
    );
    r.expect(303, None);
    assert_eq!(r.header("location"), Some("/ui/repo/private/app"));
    let set = r.header("set-cookie").unwrap();
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age="] {
        assert!(set.contains(attr), "{set}");
    }
    assert!(!set.contains("Secure"), "plain HTTP: {set}");
    cookie_of(&r)
}

#[test]
fn pages_follow_the_registry_logins_and_rights() {
    let dir = tempfile::tempdir().unwrap();
    let (s, file) = htpasswd_server(dir.path(), &[("alice", "pw"), ("bob", "pw2")], RULES);
    let alice = Client::new(&s).basic("alice", "pw");
    alice.push_image("public/site", "v1", "p");
    alice.push_image("private/app", "v1", "q");
    let c = Client::new(&s);

    let r = c.get("/");
    r.expect(200, None);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    let csp = r.header("content-security-policy").unwrap();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("default-src 'none'"),
        "{csp}"
    );
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let page = text(&r);
    assert!(
        page.contains("public/site") && !page.contains("private/app"),
        "{page}"
    );
    assert!(page.contains("1 repository"), "{page}");
    assert!(page.contains("/ui/login"), "a way to sign in");
    // A private repository is as unknown as a missing one.
    let private = c.get("/ui/repo/private/app");
    let missing = c.get("/ui/repo/private/none");
    assert_eq!((private.status, missing.status), (404, 404));
    assert!(text(&private).contains("Sign in"), "{}", text(&private));

    // Wrong password: the form again, 401, no cookie.
    let r = c.call(
        "POST",
        "/ui/login",
        &[("content-type", "application/x-www-form-urlencoded")],
        Some(b"username=alice&password=nope"),
    );
    r.expect(401, None);
    assert!(r.header("set-cookie").is_none());
    assert!(text(&r).contains("Invalid username or password"));
    // A login posted from another site is refused.
    let r = c.call(
        "POST",
        "/ui/login",
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("origin", "http://evil.example"),
        ],
        Some(b"username=alice&password=pw"),
    );
    r.expect(403, None);
    // After signing in, `next` may not lead off this registry.
    let r = c.call(
        "POST",
        "/ui/login",
        &[("content-type", "application/x-www-form-urlencoded")],
        Some(b"username=alice&password=pw&next=%2F%2Fevil.example%2F"),
    );
    r.expect(303, None);
    assert_eq!(r.header("location"), Some("/"));

    let session = sign_in(&c, "alice", "pw");
    let with = |path: &str| c.call("GET", path, &[("cookie", &session)], None);
    let page = text(with("/").expect(200, None));
    assert!(
        page.contains("private/app") && page.contains("2 repositories"),
        "{page}"
    );
    assert!(
        page.contains("alice") && page.contains("Sign out"),
        "{page}"
    );
    with("/ui/repo/private/app").expect(200, None);
    // A forged or foreign cookie is nobody.
    let forged = format!("{session}x");
    let r = c.call("GET", "/ui/repo/private/app", &[("cookie", &forged)], None);
    r.expect(404, None);
    // bob, removed from the file, loses his session.
    let bobs = sign_in(&c, "bob", "pw2");
    write_htpasswd(&file, &[("alice", "pw")]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while text(&c.call("GET", "/", &[("cookie", &bobs)], None)).contains("bob") {
        assert!(
            std::time::Instant::now() < deadline,
            "bob's session outlived him"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // A new password ends the sessions made with the old one.
    let again = sign_in(&c, "alice", "pw");
    write_htpasswd(&file, &[("alice", "new-pw")]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while text(&c.call("GET", "/", &[("cookie", &again)], None)).contains("Sign out") {
        assert!(
            std::time::Instant::now() < deadline,
            "the old password's session lived on"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let session = sign_in(&c, "alice", "new-pw");
    // Signing out ends the cookie.
    let r = c.call("POST", "/ui/logout", &[("cookie", &session)], Some(b""));
    r.expect(303, None);
    assert!(r.header("set-cookie").unwrap().contains("Max-Age=0"));
}

#[test]
fn pages_show_images_indexes_and_referrers_escaped() {
    let s = Server::start();
    let c = Client::new(&s);
    // Two platforms under one index, with hostile labels and history.
    let mut children = vec![];
    for (arch, label) in [
        ("amd64", "<script>window.pwned=1</script>"),
        ("arm64", "\"><img src=x onerror=alert(1)>"),
    ] {
        let config = serde_json::json!({
            "architecture": arch, "os": "linux", "created": "2024-05-01T10:00:00Z",
            "config": {"Entrypoint": ["/bin/app", "--flag"], "Cmd": ["serve"], "Env": ["MODE=<b>prod</b>"],
                       "Labels": {"org.example.note": label}, "WorkingDir": "/srv"},
            "history": [{"created_by": "/bin/sh -c #(nop) CMD [\"<i>serve</i>\"]", "empty_layer": true}],
        })
        .to_string();
        let cd = c.push_blob("team/app", config.as_bytes());
        let layer = vec![arch.as_bytes()[0]; 3000];
        let ld = c.push_blob("team/app", &layer);
        let m = image_manifest(&cd, config.len(), &[(&ld, layer.len())], None);
        c.put_manifest(
            "team/app",
            &sha256(m.as_bytes()),
            OCI_MANIFEST,
            m.as_bytes(),
        )
        .expect(201, None);
        children.push(format!(
            r#"{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":{},"platform":{{"os":"linux","architecture":"{arch}"}}}}"#,
            sha256(m.as_bytes()),
            m.len()
        ));
    }
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{}],"annotations":{{"<tag>":"</dl><script>x</script>"}}}}"#,
        children.join(",")
    );
    let index_digest = sha256(index.as_bytes());
    c.put_manifest("team/app", "1.0", OCI_INDEX, index.as_bytes())
        .expect(201, None);
    // Push times are whole seconds in a bucket.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    c.put_manifest("team/app", "latest", OCI_INDEX, index.as_bytes())
        .expect(201, None);
    // A signature-like referrer of the index.
    let empty = c.push_blob("team/app", b"{}");
    let sig = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","artifactType":"application/vnd.dev.cosign.artifact.sig.v1+json","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{empty}","size":2}},"layers":[],"subject":{{"mediaType":"{OCI_INDEX}","digest":"{index_digest}","size":{}}},"annotations":{{"signed-by":"<ci>"}}}}"#,
        index.len()
    );
    c.put_manifest(
        "team/app",
        &sha256(sig.as_bytes()),
        OCI_MANIFEST,
        sig.as_bytes(),
    )
    .expect(201, None);
    c.push_image("team/empty", "gone", "e");
    c.call("DELETE", "/v2/team/empty/manifests/gone", &[], None)
        .expect(202, None);

    let list = text(c.get("/").expect(200, None));
    assert!(list.contains("team/app") && list.contains(">2<"), "{list}");
    assert!(
        list.contains(">empty<"),
        "an empty repository says so: {list}"
    );

    let repo = text(c.get("/ui/repo/team/app").expect(200, None));
    assert!(
        repo.contains("linux/amd64, linux/arm64") && repo.contains("index"),
        "{repo}"
    );
    assert!(
        repo.contains(">1.0<") && repo.contains(">latest<"),
        "{repo}"
    );
    assert!(
        repo.contains("5.9 KiB") || repo.contains("6."),
        "size of both platforms: {repo}"
    );
    let by_time = text(c.get("/ui/repo/team/app?sort=pushed").expect(200, None));
    assert!(
        by_time.find(">latest<").unwrap() < by_time.find(">1.0<").unwrap(),
        "newest first: {by_time}"
    );

    let image = text(c.get("/ui/image/team/app/1.0").expect(200, None));
    for want in [
        "linux/amd64",
        "linux/arm64",
        "/srv",
        "application/vnd.dev.cosign.artifact.sig.v1+json",
        "docker pull ",
        "podman pull ",
        &format!("/team/app@{index_digest}"),
        "/team/app:1.0",
    ] {
        assert!(image.contains(want), "{want} missing: {image}");
    }
    for hostile in [
        "<script>",
        "<img",
        "<b>prod",
        "<i>serve",
        "</dl><script>",
        "<ci>",
        "<tag>",
    ] {
        assert!(!image.contains(hostile), "{hostile} not escaped: {image}");
    }
    // The referrer's own page says what it refers to.
    let sig_page = text(
        c.get(&format!("/ui/image/team/app/{}", sha256(sig.as_bytes())))
            .expect(200, None),
    );
    assert!(sig_page.contains(&index_digest), "{sig_page}");

    // Mistakes and misses are pages, not panics.
    c.get("/ui/image/team/app/nope").expect(404, None);
    c.get("/ui/image/team/app/sha256:zz").expect(404, None);
    c.get("/ui/repo/UPPER").expect(404, None);
    c.get("/ui/nothing").expect(404, None);
    c.get("/?n=0").expect(400, None);
    c.get("/ui/static/app.js").expect(200, None);
}

#[test]
fn big_indexes_are_read_within_bounds() {
    let s = Server::start();
    let c = Client::new(&s);
    let config = r#"{"architecture":"amd64","os":"linux"}"#;
    let cd = c.push_blob("team/big", config.as_bytes());
    let ld = c.push_blob("team/big", b"layer");
    let mut children = vec![];
    for i in 0..70 {
        let m = image_manifest(&cd, config.len(), &[(&ld, 5)], None).replacen(
            '{',
            &format!(r#"{{"annotations":{{"n":"{i}"}},"#),
            1,
        );
        let d = sha256(m.as_bytes());
        c.put_manifest("team/big", &d, OCI_MANIFEST, m.as_bytes())
            .expect(201, None);
        let child = format!(
            r#"{{"mediaType":"{OCI_MANIFEST}","digest":"{d}","size":{},"platform":{{"os":"linux","architecture":"amd64","variant":"v{i}"}}}}"#,
            m.len()
        );
        // The first child named a thousand times over.
        let times = if i == 0 { 1000 } else { 1 };
        children.extend(std::iter::repeat_n(child, times));
    }
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{}]}}"#,
        children.join(",")
    );
    c.put_manifest("team/big", "all", OCI_INDEX, index.as_bytes())
        .expect(201, None);
    let page = text(c.get("/ui/image/team/big/all").expect(200, None));
    assert_eq!(
        page.matches("<section class=\"image\">").count(),
        70,
        "each child once"
    );
    assert_eq!(
        page.matches("Not read for this page").count(),
        6,
        "past 64 children, by digest alone"
    );
    let repo = text(c.get("/ui/repo/team/big").expect(200, None));
    assert!(
        repo.contains("linux/amd64/v69"),
        "every platform listed: {repo}"
    );
}

#[test]
fn the_list_pages_by_name_and_search_ranks() {
    let s = Server::start();
    let c = Client::new(&s);
    for i in 0..5 {
        c.push_image(&format!("r{i}/svc"), "v", &i.to_string());
    }
    let first = text(c.get("/?n=2").expect(200, None));
    assert!(first.contains("r0/svc") && first.contains("r1/svc") && !first.contains("r2/svc"));
    assert!(first.contains("5 repositories"), "{first}");
    assert!(
        first.contains("href=\"/?last=r1%2Fsvc&#38;n=2\""),
        "a keyset link: {first}"
    );
    let second = text(c.get("/?last=r1%2Fsvc&n=2").expect(200, None));
    assert!(second.contains("r2/svc") && second.contains("r3/svc") && !second.contains("r1/svc"));
    let found = text(c.get("/?q=r3").expect(200, None));
    assert!(
        found.contains("1 match for") && found.contains("r3/svc"),
        "{found}"
    );
    let none = text(c.get("/?q=%3Cscript%3E").expect(200, None));
    assert!(
        !none.contains("<script>") && none.contains("0 matches"),
        "{none}"
    );
}

#[test]
fn deleting_a_tag_asks_first_and_refuses_forgeries() {
    let s = Server::start();
    let c = Client::new(&s);
    let (_, digest) = c.push_image("team/app", "v1", "one");
    let (m, _) = c.push_image("team/app", "v1-again", "one");
    assert_eq!(sha256(&m), digest);
    c.push_image("team/app", "v2", "two");

    let page = text(c.get("/ui/delete/team/app/v1").expect(200, None));
    assert!(page.contains(&digest), "{page}");
    assert!(
        page.contains(">v1-again<"),
        "the other tag on the same image: {page}"
    );
    let token = page
        .split("name=\"token\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_string();
    let post = |headers: &[(&str, &str)], body: String| {
        let mut h = vec![("content-type", "application/x-www-form-urlencoded")];
        h.extend_from_slice(headers);
        c.call("POST", "/ui/delete/team/app/v1", &h, Some(body.as_bytes()))
    };
    let form = format!("digest={digest}&token={token}");
    // No token, another tag's token, another site: nothing happens.
    post(&[], format!("digest={digest}")).expect(403, None);
    post(&[("sec-fetch-site", "cross-site")], form.clone()).expect(403, None);
    let other = format!("digest={digest}&token={token}x");
    post(&[], other).expect(403, None);
    c.get("/v2/team/app/manifests/v1").expect(200, None);

    let r = post(&[("sec-fetch-site", "same-origin")], form.clone());
    r.expect(303, None);
    assert_eq!(r.header("location"), Some("/ui/repo/team/app?deleted=v1"));
    c.get("/v2/team/app/manifests/v1")
        .expect(404, Some("MANIFEST_UNKNOWN"));
    c.get("/v2/team/app/manifests/v1-again").expect(200, None);
    c.get(&format!("/v2/team/app/manifests/{digest}"))
        .expect(200, None);
    let repo = text(c.get("/ui/repo/team/app?deleted=v1").expect(200, None));
    assert!(repo.contains("Deleted the tag v1."), "{repo}");

    // A tag moved since the page was shown is left alone.
    let page = text(c.get("/ui/delete/team/app/v2").expect(200, None));
    let token = page
        .split("name=\"token\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let shown = page
        .split("name=\"digest\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    c.push_image("team/app", "v2", "three");
    let r = c.call(
        "POST",
        "/ui/delete/team/app/v2",
        &[("content-type", "application/x-www-form-urlencoded")],
        Some(format!("digest={shown}&token={token}").as_bytes()),
    );
    r.expect(409, None);
    c.get("/v2/team/app/manifests/v2").expect(200, None);
}

#[test]
fn deletes_follow_the_config_and_the_page_can_be_off() {
    let s = Server::start_with(Opts {
        delete: false,
        ..Opts::default()
    });
    let c = Client::new(&s);
    c.push_image("team/app", "v1", "one");
    let repo = text(c.get("/ui/repo/team/app").expect(200, None));
    assert!(!repo.contains("Delete"), "{repo}");
    let r = c.get("/ui/delete/team/app/v1");
    r.expect(403, None);
    assert!(text(&r).contains("storage.delete.enabled"));

    let off = Server::start_with(Opts {
        extra: "ui:\n  enabled: false\n".into(),
        ..Opts::default()
    });
    let c = Client::new(&off);
    let r = c.get("/");
    r.expect(404, None);
    assert_eq!(r.header("content-type"), Some("application/json"));
    c.get("/ui/repo/x").expect(404, None);
    c.get("/v1/_ping").expect(200, None);
}
