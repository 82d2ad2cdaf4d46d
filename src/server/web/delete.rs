//! Deleting a tag: a page that says what will happen (the digest, the
//! other tags on the same image), then a form post that deletes exactly
//! that tag, only if it still names that digest, and only with a token
//! signed for it, from this site.

use http::StatusCode;

use super::pages::DeletePage;
use super::{bad_request, catch_up, field, redirect, session, Failure, Page, PageResult};
use crate::notify::{Action, Occurrence};
use crate::oci::{Digest, ErrorCode, RepoName, Tag};
use crate::server::announce::announce;

impl Page<'_> {
    fn delete_target(&self, path: &str) -> Result<(RepoName, Tag), Failure> {
        let (name, tag) = path
            .rsplit_once('/')
            .ok_or_else(|| Failure::NotFound("There is no such page.".into()))?;
        let repo = self.repo_name(name)?;
        let tag: Tag = tag
            .parse()
            .map_err(|e| Failure::NotFound(format!("{tag:?} is not a tag: {e}.")))?;
        if !self.may_delete(&repo) {
            let why = if !self.app.config.storage.delete_enabled {
                "Deletes are turned off in this registry (storage.delete.enabled).".to_string()
            } else if self.app.config.storage.readonly {
                "The registry is read-only for maintenance.".to_string()
            } else {
                format!("You may not delete in {repo}.")
            };
            return Err(Failure::Status(
                StatusCode::FORBIDDEN,
                "Not allowed".into(),
                why,
            ));
        }
        Ok((repo, tag))
    }

    fn delete_token(&self, repo: &RepoName, tag: &Tag, digest: &str) -> String {
        self.app
            .page_keys
            .form_token(&self.subject(), "delete", &format!("{repo}:{tag}@{digest}"))
    }

    pub(super) async fn delete_form(&self, path: &str) -> PageResult {
        let (repo, tag) = self.delete_target(path)?;
        catch_up(self.app).await?;
        let index = self.app.store.index();
        let Some(digest) = index.tag_digest(&repo, &tag) else {
            return Err(Failure::NotFound(format!("{repo} has no tag {tag}.")));
        };
        let others = index
            .tags_pointing_at(&repo, &digest)
            .into_iter()
            .filter(|t| *t != tag)
            .map(|t| t.to_string())
            .collect();
        let digest = digest.to_string();
        self.html(
            StatusCode::OK,
            &DeletePage {
                chrome: self.chrome(),
                token: self.delete_token(&repo, &tag, &digest),
                name: repo.to_string(),
                tag: tag.to_string(),
                digest,
                others,
            },
        )
    }

    pub(super) async fn delete(&self, path: &str, form: &[(String, String)]) -> PageResult {
        let (repo, tag) = self.delete_target(path)?;
        let digest = field(form, "digest");
        let token = field(form, "token");
        if !session::same_origin(&self.headers)
            || !self.app.page_keys.form_token_ok(
                token,
                &self.subject(),
                "delete",
                &format!("{repo}:{tag}@{digest}"),
            )
        {
            return Err(Failure::Status(
                StatusCode::FORBIDDEN,
                "Not deleted".into(),
                "The form was not this page's, or it is more than an hour old. Open the tag's delete page again.".into(),
            ));
        }
        let expected: Digest = digest
            .parse()
            .map_err(|_| bad_request("the form's digest is not a digest"))?;
        let (r, t) = (repo.clone(), tag.clone());
        // Exactly the tag the person saw: if it was pushed again since,
        // to another image, nothing is deleted.
        let moved = !self
            .app
            .blocking(move |store| store.delete_tag_if(&r, &t, &expected))
            .await
            .map_err(|e| match e.code {
                ErrorCode::ManifestUnknown | ErrorCode::NameUnknown => {
                    Failure::NotFound(format!("{repo} has no tag {tag} any more."))
                }
                _ => Failure::Api(e),
            })?;
        if moved {
            return Err(Failure::Status(
                StatusCode::CONFLICT,
                "Not deleted".into(),
                format!("The tag {tag} was pushed again since the page was shown: it points at another image now. Nothing was deleted."),
            ));
        }
        tracing::info!(repository = %repo, tag = %tag, user = self.who.name(), "tag deleted from the web page");
        if let Some(asked) = &self.asked {
            let deleted = Occurrence::new(Action::Delete, repo.as_str()).tag(tag.as_str());
            announce(self.app, asked, vec![deleted]);
        }
        Ok(redirect(&self.link(
            &format!("ui/repo/{repo}"),
            &[("deleted", tag.as_str())],
        )))
    }
}
