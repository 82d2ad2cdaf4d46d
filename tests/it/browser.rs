//! The web page in a real browser: Debian's headless Chromium driven over
//! WebDriver against the real server. Pages load and show what was pushed,
//! links lead where they should, search finds, signing in shows more,
//! delete asks first and then deletes, an injected script in a label does
//! not run, and everything works with scripts turned off too.

use crate::auth::htpasswd_server;
use crate::support::webdriver::Browser;
use crate::support::*;
use crate::web::RULES;

/// An image whose config carries hostile labels.
fn push_labelled(c: &Client, repo: &str, tag: &str) -> String {
    let config = serde_json::json!({
        "architecture": "arm64", "os": "linux", "created": "2024-05-01T10:00:00Z",
        "config": {
            "Entrypoint": ["/bin/app"],
            "Env": ["GREETING=<b>hi</b>"],
            "Labels": {
                "org.example.script": "<script>window.pwned = 1</script>",
                "org.example.img": "\"><img src=x onerror=\"window.pwned = 2\">",
            },
        },
        "history": [{"created_by": "RUN echo '<script>window.pwned = 3</script>'"}],
    })
    .to_string();
    let cd = c.push_blob(repo, config.as_bytes());
    let ld = c.push_blob(repo, &[7u8; 5000]);
    let m = image_manifest(&cd, config.len(), &[(&ld, 5000)], None);
    c.put_manifest(repo, tag, OCI_MANIFEST, m.as_bytes())
        .expect(201, None);
    sha256(m.as_bytes())
}

fn no_injected_script_ran(b: &Browser) {
    assert_eq!(
        b.script("return window.pwned === undefined"),
        true,
        "an injected script ran on {}",
        b.url()
    );
    // Only the page's own script is in the document.
    assert_eq!(
        b.script(
            "return Array.from(document.scripts).map(s => s.getAttribute('src') || 'inline').join(' ')"
        ),
        "/ui/static/app.js"
    );
}

#[test]
fn the_page_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = htpasswd_server(dir.path(), &[("alice", "pw")], RULES);
    let alice = Client::new(&s).basic("alice", "pw");
    let digest = push_labelled(&alice, "public/site", "v1");
    alice.push_image("public/other", "1", "o");
    alice.push_image("private/app", "keep", "k");
    alice.push_image("private/app", "old", "x");
    let home = s.url("/");

    let b = Browser::start(true);
    b.goto(&home);
    assert!(b.title().starts_with("Repositories"), "{}", b.title());
    let list = b.text("table.repos");
    assert!(
        list.contains("public/site") && list.contains("public/other"),
        "{list}"
    );
    assert!(
        !list.contains("private/app"),
        "anonymous sees only what it may pull: {list}"
    );

    // Search from the box.
    let q = b.one("header input[name=q]");
    q.type_text("sit");
    b.one("header form.search button").click();
    b.wait_url("/?q=sit");
    assert_eq!(b.text("table.repos tbody"), "public/site 1");
    assert!(b.text("#count").contains("1 match"), "{}", b.text("#count"));

    // Repository, then image, by following links.
    b.link("public/site").click();
    b.wait_url("/ui/repo/public/site");
    let row = b.text("table.tags tbody tr");
    assert!(
        row.contains("v1") && row.contains("linux/arm64") && row.contains("image"),
        "{row}"
    );
    b.link("v1").click();
    b.wait_url("/ui/image/public/site/v1");
    let labels = b.text("table.labels");
    assert!(
        labels.contains("<script>window.pwned = 1</script>"),
        "shown as text: {labels}"
    );
    assert!(labels.contains("onerror"), "{labels}");
    assert!(b.text("ul.env").contains("GREETING=<b>hi</b>"));
    assert!(b
        .text("table.history")
        .contains("<script>window.pwned = 3</script>"));
    no_injected_script_ran(&b);
    // The page's script ran under its content security policy: copy buttons.
    let commands: Vec<String> = b
        .all(".pull .cmd input")
        .iter()
        .filter_map(|i| i.attribute("value"))
        .collect();
    assert!(
        commands.contains(&format!("docker pull {}/public/site:v1", s.addr))
            && commands.contains(&format!("podman pull {}/public/site@{digest}", s.addr)),
        "{commands:?}"
    );
    assert_eq!(b.all(".pull .cmd button").len(), commands.len());
    // Anonymous may not delete: no delete links, and the page says so.
    b.goto(&s.url("/ui/repo/public/site"));
    assert!(b.all("a.danger").is_empty());

    // Sign in with the registry's own user.
    b.goto(&s.url("/ui/repo/private/app"));
    assert!(b.title().starts_with("Not found"), "{}", b.title());
    b.link("Sign in").click();
    b.wait_url("/ui/login");
    b.one("input[name=username]").type_text("alice");
    b.one("input[name=password]").type_text("pw");
    b.one("form.login button").click();
    b.wait_url("/ui/repo/private/app");
    b.goto(&home);
    assert_eq!(b.text("header .user"), "alice");
    assert!(b.text("table.repos").contains("private/app"));
    assert_eq!(
        b.script("return document.cookie"),
        "",
        "the session cookie is not readable by scripts"
    );

    // Delete asks first, names the other tags, then deletes exactly one.
    b.link("private/app").click();
    b.wait_url("/ui/repo/private/app");
    let delete_links = b.all("a.danger");
    assert_eq!(delete_links.len(), 2);
    b.goto(&s.url("/ui/delete/private/app/old"));
    assert!(
        b.text("h1").contains("Delete tag private/app:old?"),
        "{}",
        b.text("h1")
    );
    b.one("form button.danger").click();
    b.wait_url("/ui/repo/private/app?deleted=old");
    assert_eq!(b.text("p.note"), "Deleted the tag old.");
    let rows = b.text("table.tags tbody");
    assert!(rows.contains("keep") && !rows.contains("old"), "{rows}");
    alice
        .get("/v2/private/app/manifests/old")
        .expect(404, Some("MANIFEST_UNKNOWN"));
    alice
        .get("/v2/private/app/manifests/keep")
        .expect(200, None);

    // Signing out returns to what anonymous sees.
    b.one("header .who form button").click();
    b.wait_until("the list", |url| url == home);
    assert!(b.text("header .who").contains("Sign in"));
    assert!(!b.text("table.repos").contains("private/app"));
}

#[test]
fn the_page_works_with_scripts_off() {
    let s = Server::start();
    let c = Client::new(&s);
    push_labelled(&c, "team/app", "v1");
    c.push_image("team/app", "v2", "two");
    let b = Browser::start(false);
    b.goto(&s.url("/"));
    b.link("team/app").click();
    b.wait_url("/ui/repo/team/app");
    b.link("v1").click();
    b.wait_url("/ui/image/team/app/v1");
    assert!(b
        .text("table.labels")
        .contains("<script>window.pwned = 1</script>"));
    // The commands are there to select; no script added buttons.
    assert_eq!(b.all(".pull .cmd input").len(), 4);
    assert!(b.all(".pull .cmd button").is_empty());
    // Sort by push time, and delete through the confirmation form.
    b.goto(&s.url("/ui/repo/team/app"));
    b.link("Pushed").click();
    b.wait_url("?sort=pushed");
    b.goto(&s.url("/ui/delete/team/app/v2"));
    b.one("form button.danger").click();
    b.wait_url("?deleted=v2");
    assert_eq!(b.text("p.note"), "Deleted the tag v2.");
    c.get("/v2/team/app/manifests/v2").expect(404, None);
    c.get("/v2/team/app/manifests/v1").expect(200, None);
}
