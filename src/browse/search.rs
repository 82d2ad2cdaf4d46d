//! Finding repositories by a piece of their name, best matches first: what
//! `docker search` and the page's search box ask.
//!
//! A linear pass over the index's names: at 100,000 repositories it costs
//! a few milliseconds, and it needs no second structure to keep current.

use crate::oci::RepoName;
use crate::storage::Index;

/// How well a name matches a query; lower is better.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rank {
    /// The whole name.
    Exact,
    /// The name starts with the query.
    Prefix,
    /// A path component starts with the query (`team/nginx` for `nginx`).
    Component,
    /// Anywhere in the name.
    Substring,
}

/// How `name` matches `query` (already lower-cased), if it does. Repository
/// names are lower-case, so the match ignores case. An empty query matches
/// every name.
pub fn rank(name: &str, query: &str) -> Option<Rank> {
    if name == query {
        return Some(Rank::Exact);
    }
    if name.starts_with(query) {
        return Some(Rank::Prefix);
    }
    let at = name.find(query)?;
    // Another occurrence may start a component even if the first does not.
    let starts_component = name[at..]
        .match_indices(query)
        .any(|(i, _)| name.as_bytes()[at + i - 1] == b'/');
    Some(match starts_component {
        true => Rank::Component,
        false => Rank::Substring,
    })
}

/// One page of results, and how many matched in all.
#[derive(Debug, PartialEq, Eq)]
pub struct Found {
    /// Repository names with their number of tags.
    pub items: Vec<(RepoName, usize)>,
    pub total: usize,
}

/// The repositories `visible` admits whose names contain `query`, best
/// first and then by name; `page` counts from 1, `per_page` items each.
pub fn search(
    index: &Index,
    query: &str,
    visible: impl Fn(&RepoName) -> bool,
    page: usize,
    per_page: usize,
) -> Found {
    let query = query.trim().to_ascii_lowercase();
    let mut hits: Vec<(Rank, RepoName, usize)> = Vec::new();
    index.for_each_repo(|name, tags| {
        if let Some(r) = rank(name.as_str(), &query) {
            if visible(name) {
                hits.push((r, name.clone(), tags));
            }
        }
    });
    // The index walks names in order: a stable sort by rank keeps it.
    hits.sort_by_key(|(r, _, _)| *r);
    let total = hits.len();
    let skip = page.saturating_sub(1).saturating_mul(per_page);
    Found {
        items: hits
            .into_iter()
            .skip(skip)
            .take(per_page)
            .map(|(_, n, t)| (n, t))
            .collect(),
        total,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::{Digest, Tag};

    #[test]
    fn ranks_exact_then_prefix_then_component_then_substring() {
        assert_eq!(rank("nginx", "nginx"), Some(Rank::Exact));
        assert_eq!(rank("nginx-proxy", "nginx"), Some(Rank::Prefix));
        assert_eq!(rank("team/nginx", "nginx"), Some(Rank::Component));
        assert_eq!(rank("my-nginx/nginx", "nginx"), Some(Rank::Component));
        assert_eq!(rank("team/my-nginx", "nginx"), Some(Rank::Substring));
        assert_eq!(rank("team/app", "m/a"), Some(Rank::Substring));
        assert_eq!(rank("redis", "nginx"), None);
        assert_eq!(rank("anything", ""), Some(Rank::Prefix));
    }

    #[test]
    fn best_first_then_by_name_with_pages_and_rights() {
        let index = Index::default();
        let d = Digest::sha256(b"m");
        for name in [
            "a/nginx-old",
            "nginx",
            "nginx-proxy",
            "secret/nginx",
            "team/nginx",
            "x/mynginx",
            "redis",
        ] {
            index.set_tag(&name.parse().unwrap(), &"v1".parse::<Tag>().unwrap(), &d);
        }
        let names =
            |f: &Found| -> Vec<String> { f.items.iter().map(|(n, _)| n.to_string()).collect() };
        let public = |r: &RepoName| !r.as_str().starts_with("secret/");
        let all = search(&index, "NGINX ", public, 1, 10);
        assert_eq!(
            names(&all),
            [
                "nginx",
                "nginx-proxy",
                "a/nginx-old",
                "team/nginx",
                "x/mynginx"
            ]
        );
        assert_eq!(all.total, 5);
        assert_eq!(all.items[0].1, 1, "tag counts come along");
        let second = search(&index, "nginx", public, 2, 2);
        assert_eq!(names(&second), ["a/nginx-old", "team/nginx"]);
        assert_eq!(second.total, 5);
        assert!(search(&index, "nginx", public, 9, 2).items.is_empty());
    }
}
