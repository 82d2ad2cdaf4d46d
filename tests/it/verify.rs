//! `registry verify` on stores the real server wrote, then damaged behind
//! its back as a failing disk, a careless operator or a bug would: a byte
//! flipped, a blob lost, a link lost, a manifest that is not one. Each
//! problem must be found and named with the images it breaks; a sound
//! store must pass. On a file system, or in the bucket of the S3 pass.

use std::path::Path;
use std::process::Command;

use crate::support::*;

/// `registry verify CONFIG --json ARGS`: exit code, report, stderr.
fn verify(config: &Path, args: &[&str]) -> (i32, serde_json::Value, String) {
    let out = Command::new(BIN)
        .arg("verify")
        .arg(config)
        .arg("--json")
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (
        out.status.code().unwrap_or(-1),
        serde_json::from_str(stdout.trim()).unwrap_or(serde_json::Value::Null),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Write `data` at `rel` inside the layout's `v2/`, behind the server's back.
fn put_raw(s: &Server, rel: &str, data: &[u8]) {
    match S3Target::from_env() {
        Some(s3) => s3.put(&s.root, rel, data),
        None => {
            let path = s.root.join("docker/registry/v2").join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, data).unwrap();
        }
    }
}

fn delete_raw(s: &Server, rel: &str) {
    match S3Target::from_env() {
        Some(s3) => s3.delete(&s.root, rel),
        None => std::fs::remove_file(s.root.join("docker/registry/v2").join(rel)).unwrap(),
    }
}

fn blob_rel(digest: &str) -> String {
    let hex = digest.strip_prefix("sha256:").unwrap();
    format!("blobs/sha256/{}/{hex}/data", &hex[..2])
}

fn link_rel(repo: &str, kind: &str, digest: &str) -> String {
    let hex = digest.strip_prefix("sha256:").unwrap();
    format!("repositories/{repo}/{kind}/sha256/{hex}/link")
}

/// The config and layer digests of a manifest.
fn blobs_of(manifest: &[u8]) -> (String, String) {
    let m: serde_json::Value = serde_json::from_slice(manifest).unwrap();
    (
        m["config"]["digest"].as_str().unwrap().to_string(),
        m["layers"][0]["digest"].as_str().unwrap().to_string(),
    )
}

/// An index of two images pushed by digest, tagged `tag`; the child digests.
fn push_index(c: &Client, repo: &str, tag: &str) -> Vec<String> {
    let mut children = vec![];
    let mut entries = vec![];
    for arch in ["amd64", "arm64"] {
        let config = format!(r#"{{"architecture":"{arch}","os":"linux"}}"#);
        let layer = format!("{arch} layer ").repeat(50);
        let cd = c.push_blob(repo, config.as_bytes());
        let ld = c.push_blob(repo, layer.as_bytes());
        let m = image_manifest(&cd, config.len(), &[(&ld, layer.len())], None);
        let d = sha256(m.as_bytes());
        c.put_manifest(repo, &d, OCI_MANIFEST, m.as_bytes())
            .expect(201, None);
        entries.push(format!(
            r#"{{"mediaType":"{OCI_MANIFEST}","digest":"{d}","size":{},"platform":{{"architecture":"{arch}","os":"linux"}}}}"#,
            m.len()
        ));
        children.push(d);
    }
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{}]}}"#,
        entries.join(",")
    );
    c.put_manifest(repo, tag, OCI_INDEX, index.as_bytes())
        .expect(201, None);
    children
}

fn problems(report: &serde_json::Value) -> Vec<serde_json::Value> {
    report["problems"].as_array().cloned().unwrap_or_default()
}

/// The one problem of `kind` about `digest`.
fn find<'a>(ps: &'a [serde_json::Value], kind: &str, digest: &str) -> &'a serde_json::Value {
    ps.iter()
        .find(|p| p["kind"] == kind && p["digest"] == digest)
        .unwrap_or_else(|| panic!("no {kind} problem for {digest} in {ps:#?}"))
}

fn breaks(p: &serde_json::Value) -> Vec<&str> {
    p["breaks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_str().unwrap())
        .collect()
}

#[test]
fn a_sound_store_passes_beside_the_running_server() {
    let s = Server::start();
    let c = Client::new(&s);
    c.push_image("apps/web", "v1", "web1");
    c.push_image("apps/web", "v2", "web2");
    push_index(&c, "apps/multi", "all");
    let (code, report, err) = verify(&s.config, &[]);
    assert_eq!(code, 0, "{err}\n{report:#}");
    assert_eq!(problems(&report), Vec::<serde_json::Value>::new());
    assert_eq!(report["repositories"], 2, "{report:#}");
    assert_eq!(report["tags"], 3, "{report:#}");
    assert_eq!(report["manifests"], 5, "{report:#}");
    // 2 images x 2 blobs, 2 children x 2 blobs, and 5 manifests.
    assert_eq!(report["blobs"], 13, "{report:#}");
    // The text report says so too.
    let out = Command::new(BIN)
        .args(["verify".as_ref(), s.config.as_os_str()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("no problems found"), "{text}");
}

#[test]
fn damage_is_found_and_named_with_the_images_it_breaks() {
    let s = Server::start();
    let c = Client::new(&s);
    // A layer whose bytes change: both tags of its image break.
    let (app, app_digest) = c.push_image("app", "v1", "app");
    c.put_manifest("app", "v2", OCI_MANIFEST, &app)
        .expect(201, None);
    let (_, app_layer) = blobs_of(&app);
    let layer_len = c.get(&format!("/v2/app/blobs/{app_layer}")).body.len();
    put_raw(&s, &blob_rel(&app_layer), &vec![b'x'; layer_len]);
    // A config that is lost.
    let (lib, _) = c.push_image("lib", "1", "lib");
    let (lib_config, _) = blobs_of(&lib);
    delete_raw(&s, &blob_rel(&lib_config));
    // A layer link that is lost: the blob is there, pulls through the
    // repository are refused.
    let (tools, _) = c.push_image("tools", "1", "tools");
    let (_, tools_layer) = blobs_of(&tools);
    delete_raw(&s, &link_rel("tools", "_layers", &tools_layer));
    // A tag whose manifest is gone from its repository.
    let (_, gone) = c.push_image("gone", "1", "gone");
    delete_raw(&s, &link_rel("gone", "_manifests/revisions", &gone));
    // An index whose child is gone.
    let children = push_index(&c, "multi", "all");
    delete_raw(&s, &link_rel("multi", "_manifests/revisions", &children[1]));
    // A "manifest" that is not one.
    let junk = b"this is not a manifest";
    let junk_digest = sha256(junk);
    put_raw(&s, &blob_rel(&junk_digest), junk);
    put_raw(
        &s,
        &link_rel("odd", "_manifests/revisions", &junk_digest),
        junk_digest.as_bytes(),
    );
    // And a repository nothing happened to.
    c.push_image("clean/one", "1", "clean");

    let (code, report, err) = verify(&s.config, &[]);
    assert_eq!(code, 1, "{err}\n{report:#}");
    let ps = problems(&report);
    let p = find(&ps, "corrupt", &app_layer);
    assert_eq!(breaks(p), ["app:v1", "app:v2"], "{p:#}");
    assert!(p["detail"].as_str().unwrap().contains("hash to"), "{p:#}");
    let p = find(&ps, "missing", &lib_config);
    assert_eq!(breaks(p), ["lib:1"], "{p:#}");
    let p = find(&ps, "not-linked", &tools_layer);
    assert_eq!(
        (p["repository"].as_str(), breaks(p)),
        (Some("tools"), vec!["tools:1"])
    );
    let p = find(&ps, "dangling-tag", &gone);
    assert_eq!((p["tag"].as_str(), breaks(p)), (Some("1"), vec!["gone:1"]));
    let p = find(&ps, "missing-child", &children[1]);
    assert_eq!(breaks(p), ["multi:all"], "{p:#}");
    let p = find(&ps, "bad-manifest", &junk_digest);
    assert_eq!(breaks(p), [format!("odd@{junk_digest}")], "{p:#}");
    assert_eq!(ps.len(), 6, "{ps:#?}");
    assert!(
        !ps.iter().any(|p| p.to_string().contains("clean")),
        "{ps:#?}"
    );
    // The sound manifest of the damaged repository is not blamed.
    assert!(!ps.iter().any(|p| p["digest"] == app_digest), "{ps:#?}");

    // One repository at a time: only what it needs is read.
    let (code, report, _) = verify(&s.config, &["--repository", "lib"]);
    assert_eq!(code, 1);
    let ps = problems(&report);
    assert_eq!(ps.len(), 1, "{ps:#?}");
    assert_eq!(ps[0]["kind"], "missing");
    let (code, report, err) = verify(&s.config, &["--repository", "clean/*"]);
    assert_eq!(code, 0, "{err}\n{report:#}");
    assert_eq!(report["repositories"], 1);
    assert_eq!(report["blobs"], 3, "{report:#}");

    // The text report names each problem and the images it breaks.
    let out = Command::new(BIN)
        .args(["verify".as_ref(), s.config.as_os_str()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("6 PROBLEMS"), "{text}");
    assert!(text.contains(&format!("corrupt {app_layer}")), "{text}");
    assert!(text.contains("breaks app:v1"), "{text}");
}

#[test]
fn no_store_or_no_config_is_a_failure_to_run() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\n",
            dir.path().join("nowhere").display()
        ),
    )
    .unwrap();
    let (code, _, err) = verify(&config, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("holds no registry store"), "{err}");
    let (code, _, err) = verify(&dir.path().join("missing.yml"), &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("missing.yml"), "{err}");
}
