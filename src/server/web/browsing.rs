//! The pages that show what is stored: the list of repositories (and
//! search), a repository's tags, an image.

use http::StatusCode;

use super::pages::{self, ImagePage, ImageRow, ListPage, ReferrerRow, RepoPage, RepoRow, TagRow};
use super::{bad_request, catch_up, Failure, Page, PageResult, LIST_PAGE, MAX_LIST_PAGE, TAG_PAGE};
use crate::auth::{Action, Identity};
use crate::browse;
use crate::oci::{Digest, ErrorCode, Reference, RepoName, Tag};
use crate::storage::StorageError;

impl Page<'_> {
    pub(super) async fn list(&self) -> PageResult {
        catch_up(self.app).await?;
        let index = self.app.store.index();
        let n = match self.param("n").map(str::parse::<usize>) {
            None => LIST_PAGE,
            Some(Ok(n)) if (1..=MAX_LIST_PAGE).contains(&n) => n,
            Some(_) => return Err(bad_request("n must be a number from 1 to 1000")),
        };
        let visible = |r: &RepoName| self.may(r, Action::Pull);
        let q = self.param("q").unwrap_or("").trim();
        let (rows, total, next) = if q.is_empty() {
            let last = self.param("last").filter(|l| !l.is_empty());
            let page = index.catalog(n, last, visible);
            let total = match self.app.auth.is_open() {
                true => index.repo_count(),
                false => {
                    let mut count = 0;
                    index.for_each_repo(|r, _| count += usize::from(visible(r)));
                    count
                }
            };
            let next = match (page.more, page.items.last()) {
                (true, Some(last)) => {
                    Some(self.link("", &[("last", last.as_str()), ("n", &n.to_string())]))
                }
                _ => None,
            };
            let rows = page
                .items
                .into_iter()
                .map(|name| RepoRow {
                    tags: index.tag_count(&name).unwrap_or(0),
                    name: name.to_string(),
                })
                .collect::<Vec<_>>();
            (rows, total, next)
        } else {
            let page = match self.param("page").map(str::parse::<usize>) {
                None => 1,
                Some(Ok(p)) if p >= 1 => p,
                Some(_) => return Err(bad_request("page must be a number from 1")),
            };
            let found = browse::search(index, q, visible, page, n);
            let next = (page.saturating_mul(n) < found.total).then(|| {
                self.link(
                    "",
                    &[
                        ("q", q),
                        ("page", &(page + 1).to_string()),
                        ("n", &n.to_string()),
                    ],
                )
            });
            let rows = found
                .items
                .into_iter()
                .map(|(name, tags)| RepoRow {
                    name: name.to_string(),
                    tags,
                })
                .collect();
            (rows, found.total, next)
        };
        let hidden_for_anonymous = matches!(self.who, Identity::Anonymous)
            && total == 0
            && q.is_empty()
            && self.app.auth.has_passwords();
        self.html(
            StatusCode::OK,
            &ListPage {
                chrome: self.chrome(),
                rows,
                total,
                next,
                hidden_for_anonymous,
            },
        )
    }

    pub(super) async fn repo(&self, name: &str) -> PageResult {
        let repo = self.repo_name(name)?;
        catch_up(self.app).await?;
        let by_time = self.param("sort") == Some("pushed");
        let page = match self.param("page").map(str::parse::<usize>) {
            None => 1,
            Some(Ok(p)) if p >= 1 => p,
            Some(_) => return Err(bad_request("page must be a number from 1")),
        };
        let summaries = self.app.summaries.clone();
        let r = repo.clone();
        let found = self
            .app
            .blocking(move |store| {
                let Some(tags) = store.index().tags_with_digests(&r) else {
                    return Ok(None);
                };
                let total = tags.len();
                let skip = (page - 1).saturating_mul(TAG_PAGE);
                let with_times = |tags: Vec<(Tag, Digest)>| -> Result<Vec<_>, StorageError> {
                    let names: Vec<&Tag> = tags.iter().map(|(t, _)| t).collect();
                    let times = store.tags_pushed(&r, &names)?;
                    Ok(tags
                        .into_iter()
                        .zip(times)
                        .map(|((t, d), p)| (t, d, p))
                        .collect())
                };
                let shown: Vec<_> = if by_time {
                    // Every tag's time, to sort by (concurrently in a bucket).
                    let mut all = with_times(tags)?;
                    // Newest first; tags gone meanwhile last.
                    all.sort_by_key(|t| std::cmp::Reverse(t.2));
                    all.into_iter().skip(skip).take(TAG_PAGE).collect()
                } else {
                    with_times(tags.into_iter().skip(skip).take(TAG_PAGE).collect())?
                };
                let mut rows = Vec::new();
                for (tag, digest, pushed) in shown {
                    match summaries.get(store, &r, &digest) {
                        Ok(s) => rows.push(TagRow::new(tag.as_str(), &digest, &s, pushed)),
                        // Deleted since the index was read: not a tag any more.
                        Err(StorageError::ManifestUnknown(_)) => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(Some((rows, total)))
            })
            .await?;
        let Some((rows, total)) = found else {
            return Err(Failure::NotFound(format!(
                "There is no repository {repo} that you may see."
            )));
        };
        let sort = if by_time { "pushed" } else { "name" };
        let next = (page.saturating_mul(TAG_PAGE) < total).then(|| {
            self.link(
                &format!("ui/repo/{repo}"),
                &[("sort", sort), ("page", &(page + 1).to_string())],
            )
        });
        let note = self
            .param("deleted")
            .and_then(|t| t.parse::<Tag>().ok())
            .map(|t| format!("Deleted the tag {t}."));
        self.html(
            StatusCode::OK,
            &RepoPage {
                chrome: self.chrome(),
                name: repo.to_string(),
                rows,
                total,
                sort_by_time: by_time,
                may_delete: self.may_delete(&repo),
                next,
                note,
            },
        )
    }

    pub(super) async fn image(&self, path: &str) -> PageResult {
        let (name, reference) = path
            .rsplit_once('/')
            .ok_or_else(|| Failure::NotFound("There is no such page.".into()))?;
        let repo = self.repo_name(name)?;
        catch_up(self.app).await?;
        let reference: Reference = reference.parse().map_err(|e| {
            Failure::NotFound(format!("{reference:?} is neither a tag nor a digest: {e}."))
        })?;
        let (r, reff) = (repo.clone(), reference.clone());
        let view = self
            .app
            .blocking(move |store| browse::image::view(store, &r, &reff))
            .await
            .map_err(|e| match e.code {
                ErrorCode::ManifestUnknown | ErrorCode::NameUnknown => {
                    Failure::NotFound(format!("{repo} has no image {reference}."))
                }
                _ => Failure::Api(e),
            })?;
        let tags: Vec<String> = self
            .app
            .store
            .index()
            .tags_pointing_at(&repo, &view.digest)
            .iter()
            .map(|t| t.to_string())
            .collect();
        let (title, by_name) = match &reference {
            Reference::Tag(t) => (format!("{repo}:{t}"), Some(format!("{repo}:{t}"))),
            Reference::Digest(d) => (format!("{repo}@{}", pages::short(d)), None),
        };
        let by_digest = format!("{repo}@{}", view.digest);
        let mut pull_commands = Vec::new();
        for tool in ["docker", "podman"] {
            for r in by_name.iter().chain([&by_digest]) {
                pull_commands.push(format!("{tool} pull {}/{r}", self.host));
            }
        }
        let images = view.images.iter().map(ImageRow::from).collect();
        let referrers = view.referrers.iter().map(ReferrerRow::from).collect();
        self.html(
            StatusCode::OK,
            &ImagePage {
                chrome: self.chrome(),
                name: repo.to_string(),
                title,
                pull_commands,
                tags,
                images,
                referrers,
                view,
            },
        )
    }
}
