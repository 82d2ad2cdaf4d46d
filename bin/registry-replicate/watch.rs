//! Watching a store on disk for tag changes, so that the daemon copies a
//! pushed tag within seconds rather than at the rule's interval.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use notify::{RecursiveMode, Watcher};

/// Wake `wake` whenever something under the store's repositories changes
/// in a tag directory. The watcher stops when the returned value drops.
pub fn tags(
    root: &Path,
    wake: Arc<tokio::sync::Notify>,
) -> anyhow::Result<notify::RecommendedWatcher> {
    let repos = root.join("docker/registry/v2/repositories");
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            if event
                .paths
                .iter()
                .any(|p| p.to_string_lossy().contains("/_manifests/tags/"))
            {
                wake.notify_one();
            }
        }
    })
    .context("cannot start watching the store")?;
    watcher
        .watch(&repos, RecursiveMode::Recursive)
        .with_context(|| format!("cannot watch {}", repos.display()))?;
    Ok(watcher)
}
