//! Authentication and access control against the real server: htpasswd
//! logins and reloads, anonymous pull, access rules, bearer tokens.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::pki::{now, TokenSigner};
use crate::support::*;

pub(crate) fn write_htpasswd(path: &Path, users: &[(&str, &str)]) {
    let text: String = users
        .iter()
        .map(|(u, p)| format!("{u}:{}\n", bcrypt::hash(p, 4).unwrap()))
        .collect();
    // Replace, as editors and `htpasswd` do.
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

pub(crate) fn htpasswd_server(
    dir: &Path,
    users: &[(&str, &str)],
    extra: &str,
) -> (Server, PathBuf) {
    let file = dir.join("htpasswd");
    write_htpasswd(&file, users);
    let s = Server::start_with(Opts {
        extra: format!(
            "auth:\n  htpasswd:\n    realm: test realm\n    path: {}\n{extra}",
            file.display()
        ),
        ..Opts::default()
    });
    (s, file)
}

/// Poll until `f` holds (a file watcher acts within moments).
fn eventually(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn htpasswd_login_and_challenges() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = htpasswd_server(dir.path(), &[("alice", "wonderland")], "");
    let anon = Client::new(&s);
    let r = anon.get("/v2/");
    r.expect(401, Some("UNAUTHORIZED"));
    assert_eq!(
        r.header("www-authenticate"),
        Some("Basic realm=\"test realm\"")
    );
    let alice = anon.basic("alice", "wonderland");
    alice.get("/v2/").expect(200, None);
    let (bytes, d) = alice.push_image("team/app", "v1", "x");
    assert_eq!(
        alice.get(&format!("/v2/team/app/manifests/{d}")).body,
        bytes
    );
    // Without anonymous access, nothing is readable without a login.
    anon.get("/v2/team/app/manifests/v1")
        .expect(401, Some("UNAUTHORIZED"));
    anon.get("/v2/_catalog").expect(401, Some("UNAUTHORIZED"));
    // Wrong password and unknown user read exactly the same.
    let wrong = anon.basic("alice", "nope").get("/v2/");
    let unknown = anon.basic("mallory", "wonderland").get("/v2/");
    wrong.expect(401, Some("UNAUTHORIZED"));
    assert_eq!(wrong.body, unknown.body);
    assert_eq!(
        wrong.header("www-authenticate"),
        unknown.header("www-authenticate")
    );
    // Malformed Authorization headers are 401, never 500.
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    for bad in [
        "Basic !!!".to_string(),
        format!("Basic {}", b64("no-colon")),
        "Basic".to_string(),
        "Bearer abc.def.ghi".to_string(),
        "Digest username=alice".to_string(),
        format!("Basic {}", b64("alice:wonderland\u{0}x")),
    ] {
        anon.with_authorization(&bad)
            .get("/v2/")
            .expect(401, Some("UNAUTHORIZED"));
    }
}

#[test]
fn users_follow_the_htpasswd_file_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (s, file) = htpasswd_server(dir.path(), &[("alice", "one")], "");
    let c = Client::new(&s);
    c.basic("alice", "one").get("/v2/").expect(200, None);
    c.basic("bob", "two").get("/v2/").expect(401, None);
    write_htpasswd(&file, &[("alice", "one"), ("bob", "two")]);
    eventually("bob added", || {
        c.basic("bob", "two").get("/v2/").status == 200
    });
    // A changed password: the old one stops working (the cache included).
    write_htpasswd(&file, &[("alice", "three"), ("bob", "two")]);
    eventually("alice's new password", || {
        c.basic("alice", "three").get("/v2/").status == 200
    });
    c.basic("alice", "one").get("/v2/").expect(401, None);
    // A removed user stops working.
    write_htpasswd(&file, &[("alice", "three")]);
    eventually("bob removed", || {
        c.basic("bob", "two").get("/v2/").status == 401
    });
    // A malformed file keeps the previous users.
    std::fs::write(&file, "alice:$apr1$abc$def\n").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    c.basic("alice", "three").get("/v2/").expect(200, None);
}

#[test]
fn non_bcrypt_htpasswd_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("htpasswd");
    std::fs::write(
        &file,
        format!(
            "ok:{}\nold:$apr1$Vh2Hq3bX$1bOz0VSEHV3CPgz9R7f4d/\n",
            bcrypt::hash("x", 4).unwrap()
        ),
    )
    .unwrap();
    let cfg = dir.path().join("config.yml");
    std::fs::write(
        &cfg,
        format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:0\nauth:\n  htpasswd:\n    realm: r\n    path: {}\n",
            dir.path().join("data").display(),
            file.display()
        ),
    )
    .unwrap();
    let (code, err) = run_to_exit(&["serve", cfg.to_str().unwrap()], &[]);
    assert_ne!(code, 0);
    assert!(
        err.contains("line 2") && err.contains("\"old\"") && err.contains("htpasswd -B"),
        "{err}"
    );
}

#[test]
fn anonymous_pull_beside_htpasswd() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = htpasswd_server(dir.path(), &[("ci", "secret")], "  anonymous: true\n");
    let anon = Client::new(&s);
    let (bytes, _) = anon
        .basic("ci", "secret")
        .push_image("lib/base", "1.0", "base");
    assert_eq!(anon.get("/v2/lib/base/manifests/1.0").body, bytes);
    assert_eq!(
        anon.get("/v2/_catalog").json()["repositories"],
        serde_json::json!(["lib/base"])
    );
    // Pushing needs a login.
    let r = anon.call("POST", "/v2/lib/base/blobs/uploads/", &[], Some(b""));
    r.expect(401, Some("UNAUTHORIZED"));
    assert_eq!(
        r.header("www-authenticate"),
        Some("Basic realm=\"test realm\"")
    );
    anon.call("DELETE", "/v2/lib/base/manifests/1.0", &[], None)
        .expect(401, None);
    // /v2/ still asks for a login, so that `docker login` checks the password.
    anon.get("/v2/").expect(401, None);
    anon.basic("ci", "wrong").get("/v2/").expect(401, None);
    // Empty Basic credentials (skopeo, podman and buildah without a login)
    // are no login: anonymous pull works, pushing still needs a login.
    let empty = anon.basic("", "");
    assert_eq!(empty.get("/v2/lib/base/manifests/1.0").body, bytes);
    empty
        .call("POST", "/v2/lib/base/blobs/uploads/", &[], Some(b""))
        .expect(401, None);
}

#[test]
fn access_rules() {
    let dir = tempfile::tempdir().unwrap();
    let rules = "access:
  groups:
    ci: [bot]
    staff: [bot, eve]
  rules:
    - repositories: [\"team-a/*\"]
      users: [\"@ci\"]
      actions: [push]
    - repositories: [\"*\"]
      users: [\"@staff\"]
      actions: [pull]
    - repositories: [\"carol/*\"]
      users: [carol]
      actions: [push]
    - repositories: [\"*\"]
      users: [admin]
      actions: [\"*\"]
    - repositories: [\"public/*\"]
      users: [anonymous]
      actions: [pull]
";
    let users = [("bot", "b"), ("eve", "e"), ("carol", "c"), ("admin", "a")];
    let (s, _) = htpasswd_server(dir.path(), &users, rules);
    let c = Client::new(&s);
    let (bot, eve, carol, admin) = (
        c.basic("bot", "b"),
        c.basic("eve", "e"),
        c.basic("carol", "c"),
        c.basic("admin", "a"),
    );

    let (_, d) = bot.push_image("team-a/app", "v1", "a");
    let denied = bot.call("POST", "/v2/team-b/app/blobs/uploads/", &[], Some(b""));
    denied.expect(403, Some("DENIED"));
    eve.call("POST", "/v2/team-a/app/blobs/uploads/", &[], Some(b""))
        .expect(403, Some("DENIED"));
    eve.get("/v2/team-a/app/manifests/v1").expect(200, None);
    bot.call(
        "DELETE",
        &format!("/v2/team-a/app/manifests/{d}"),
        &[],
        None,
    )
    .expect(403, Some("DENIED"));
    carol
        .get("/v2/team-a/app/manifests/v1")
        .expect(403, Some("DENIED"));
    // A mount needs pull on the source: carol gets an upload, not the blob.
    let layer = bot.push_blob("team-a/app", b"team a's private layer");
    let r = carol.call(
        "POST",
        &format!("/v2/carol/x/blobs/uploads/?mount={layer}&from=team-a/app"),
        &[],
        Some(b""),
    );
    r.expect(202, None);
    carol
        .get(&format!("/v2/carol/x/blobs/{layer}"))
        .expect(404, Some("BLOB_UNKNOWN"));
    // ...and without `from`, no blob is lent on a registry with access control.
    carol
        .call(
            "POST",
            &format!("/v2/carol/x/blobs/uploads/?mount={layer}"),
            &[],
            Some(b""),
        )
        .expect(202, None);
    carol.push_image("carol/x", "mine", "c");

    admin.push_image("public/tool", "latest", "p");
    c.get("/v2/public/tool/manifests/latest").expect(200, None);
    c.get("/v2/team-a/app/manifests/v1")
        .expect(401, Some("UNAUTHORIZED"));
    admin
        .call(
            "DELETE",
            &format!("/v2/team-a/app/manifests/{d}"),
            &[],
            None,
        )
        .expect(202, None);

    // _catalog lists only what the caller may pull.
    assert_eq!(
        c.get("/v2/_catalog").json()["repositories"],
        serde_json::json!(["public/tool"])
    );
    assert_eq!(
        carol.get("/v2/_catalog").json()["repositories"],
        serde_json::json!(["carol/x"])
    );
    assert_eq!(
        eve.get("/v2/_catalog").json()["repositories"],
        serde_json::json!(["carol/x", "public/tool", "team-a/app"])
    );
    // Pages are counted in visible names.
    let page = eve.get("/v2/_catalog?n=1&last=carol/x");
    assert_eq!(
        page.json()["repositories"],
        serde_json::json!(["public/tool"])
    );
}

#[test]
fn wrong_passwords_are_slowed_down_right_ones_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = htpasswd_server(dir.path(), &[("alice", "right")], "");
    let c = Client::new(&s);
    let mut last = Duration::ZERO;
    for _ in 0..8 {
        let t = Instant::now();
        c.basic("alice", "wrong").get("/v2/").expect(401, None);
        last = t.elapsed();
    }
    assert!(
        last >= Duration::from_millis(700),
        "8th failure answered after {last:?}"
    );
    let t = Instant::now();
    c.basic("alice", "right").get("/v2/").expect(200, None);
    assert!(
        t.elapsed() < Duration::from_millis(700),
        "a right password is not delayed"
    );
}

fn token_server(signer: &TokenSigner) -> Server {
    Server::start_with(Opts {
        extra: format!(
            "auth:\n  token:\n    realm: https://auth.example.com/token\n    service: registry.test\n    issuer: test-issuer\n    rootcertbundle: {}\n",
            signer.bundle.display()
        ),
        ..Opts::default()
    })
}

fn claims(access: serde_json::Value, exp_in: i64) -> serde_json::Value {
    serde_json::json!({
        "iss": "test-issuer",
        "sub": "robot",
        "aud": "registry.test",
        "exp": (now() as i64 + exp_in),
        "nbf": now() - 10,
        "iat": now() - 10,
        "access": access,
    })
}

#[test]
fn bearer_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let signer = TokenSigner::new(dir.path(), "good");
    let s = token_server(&signer);
    let c = Client::new(&s);
    let r = c.get("/v2/");
    r.expect(401, Some("UNAUTHORIZED"));
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"https://auth.example.com/token\",service=\"registry.test\"")
    );
    let r = c.call("POST", "/v2/team/app/blobs/uploads/", &[], Some(b""));
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"https://auth.example.com/token\",service=\"registry.test\",scope=\"repository:team/app:pull,push\"")
    );

    let bearer = |t: &str| c.with_authorization(&format!("Bearer {t}"));
    let push = signer.sign(&claims(serde_json::json!([{"type": "repository", "name": "team/app", "actions": ["pull", "push"]}]), 300), true);
    let pusher = bearer(&push);
    pusher.get("/v2/").expect(200, None);
    let (bytes, d) = pusher.push_image("team/app", "v1", "t");
    // Without x5c, any certificate of the bundle may have signed it.
    let pull = signer.sign(
        &claims(
            serde_json::json!([{"type": "repository", "name": "team/app", "actions": ["pull"]}]),
            300,
        ),
        false,
    );
    let puller = bearer(&pull);
    assert_eq!(puller.get("/v2/team/app/manifests/v1").body, bytes);
    // A token grants only what it names.
    let r = puller.call("DELETE", &format!("/v2/team/app/manifests/{d}"), &[], None);
    r.expect(401, Some("UNAUTHORIZED"));
    let challenge = r.header("www-authenticate").unwrap();
    assert!(
        challenge.contains("scope=\"repository:team/app:delete\"")
            && challenge.contains("insufficient_scope"),
        "{challenge}"
    );
    puller.get("/v2/other/manifests/v1").expect(401, None);
    puller.get("/v2/_catalog").expect(401, None);
    let cat = signer.sign(
        &claims(
            serde_json::json!([{"type": "registry", "name": "catalog", "actions": ["*"]}]),
            300,
        ),
        true,
    );
    assert_eq!(bearer(&cat).get("/v2/_catalog").status, 200);

    // Expired, wrong issuer, wrong audience, wrong key, tampered: refused.
    let expired = signer.sign(
        &claims(
            serde_json::json!([{"type": "repository", "name": "team/app", "actions": ["pull"]}]),
            -120,
        ),
        true,
    );
    let r = bearer(&expired).get("/v2/team/app/manifests/v1");
    r.expect(401, None);
    assert!(r
        .header("www-authenticate")
        .unwrap()
        .contains("invalid_token"));
    let mut other_iss = claims(serde_json::json!([]), 300);
    other_iss["iss"] = "someone-else".into();
    bearer(&signer.sign(&other_iss, true))
        .get("/v2/")
        .expect(401, None);
    let mut other_aud = claims(serde_json::json!([]), 300);
    other_aud["aud"] = "another.registry".into();
    bearer(&signer.sign(&other_aud, true))
        .get("/v2/")
        .expect(401, None);
    let stranger = TokenSigner::new(dir.path(), "stranger");
    let forged = stranger.sign(
        &claims(
            serde_json::json!([{"type": "repository", "name": "team/app", "actions": ["*"]}]),
            300,
        ),
        false,
    );
    bearer(&forged)
        .get("/v2/team/app/manifests/v1")
        .expect(401, None);
    let mut parts: Vec<String> = pull.split('.').map(str::to_string).collect();
    use base64::Engine;
    let widened = claims(
        serde_json::json!([{"type": "repository", "name": "team/app", "actions": ["*"]}]),
        300,
    );
    parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(&widened).unwrap());
    bearer(&parts.join("."))
        .call("DELETE", &format!("/v2/team/app/manifests/{d}"), &[], None)
        .expect(401, None);
    bearer("not-a-jwt").get("/v2/").expect(401, None);
    c.basic("robot", "x").get("/v2/").expect(401, None);
}
