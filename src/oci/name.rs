//! Repository names, tags and manifest references, as the spec's grammar
//! defines them.
//!
//! A `RepoName` is `component(/component)*` where a component is
//! `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`, at most 255 characters in all. The
//! grammar forbids `.` and `..` as whole components and any `/` at the ends, so
//! a valid name is always a safe relative path.

use std::fmt;
use std::str::FromStr;

use super::digest::{Digest, DigestError};

/// The longest repository name we accept: clients limit `host/name` to 255.
pub const MAX_NAME_LEN: usize = 255;

/// A validated repository name such as `library/ubuntu` or `a/b/c/d`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error("repository name must not be empty")]
    Empty,
    #[error("repository name is longer than {MAX_NAME_LEN} characters")]
    TooLong,
    #[error("invalid repository name component {0:?}: use lowercase letters and digits separated by '.', '_', '__' or '-'")]
    BadComponent(String),
}

impl RepoName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__" or one or more "-".
        let start = i;
        let first = b[i];
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &b[start..i];
        let ok = match first {
            b'.' => sep == b".",
            b'_' => sep == b"_" || sep == b"__",
            b'-' => sep.iter().all(|&c| c == b'-'),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

impl FromStr for RepoName {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        if s.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong);
        }
        for component in s.split('/') {
            if !valid_component(component) {
                return Err(NameError::BadComponent(component.to_string()));
            }
        }
        Ok(RepoName(s.to_string()))
    }
}

// Ordering is the string's (derived on the one field), so a sorted map of
// names can be searched with a plain `&str` bound such as a page's `last`.
impl std::borrow::Borrow<str> for RepoName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// A validated tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid tag {0:?}: up to 128 characters of letters, digits, '_', '.' and '-', not starting with '.' or '-'")]
pub struct TagError(pub String);

impl Tag {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Tag {
    type Err = TagError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= 128
            && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
            && b.iter()
                .all(|&c| c.is_ascii_alphanumeric() || b"_.-".contains(&c));
        if ok {
            Ok(Tag(s.to_string()))
        } else {
            Err(TagError(s.to_string()))
        }
    }
}

impl std::borrow::Borrow<str> for Tag {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// What follows `/manifests/`: a tag or a digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reference {
    Tag(Tag),
    Digest(Digest),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    #[error(transparent)]
    Digest(#[from] DigestError),
    #[error(transparent)]
    Tag(#[from] TagError),
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // A tag cannot contain ':', so a colon means the client meant a digest.
        if s.contains(':') {
            Ok(Reference::Digest(s.parse()?))
        } else {
            Ok(Reference::Tag(s.parse()?))
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => t.fmt(f),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let good = [
            "a",
            "library/ubuntu",
            "a/b/c/d",
            "my-org/my_repo",
            "a__b",
            "a---b",
            "a.b/c.d",
            "0",
        ];
        for n in good {
            assert!(n.parse::<RepoName>().is_ok(), "{n}");
        }
        let bad = [
            "", "A", "a/", "/a", "a//b", "..", "a/../b", ".", "a/./b", "a..b", "a___b", "-a", "a-",
            "a_", "_a", "a b", "a%2fb", "%2e%2e", "a:b", "a\\b", "ü",
        ];
        for n in bad {
            assert!(n.parse::<RepoName>().is_err(), "{n}");
        }
        let long = "a".repeat(MAX_NAME_LEN + 1);
        assert_eq!(long.parse::<RepoName>(), Err(NameError::TooLong));
        assert!("a".repeat(MAX_NAME_LEN).parse::<RepoName>().is_ok());
    }

    #[test]
    fn tags() {
        for t in ["latest", "v1.0", "_x", "A-b_c.d", &"a".repeat(128)] {
            assert!(t.parse::<Tag>().is_ok(), "{t}");
        }
        for t in [
            "",
            ".x",
            "-x",
            "has:colon",
            "a/b",
            "..",
            &"a".repeat(129),
            "a b",
        ] {
            assert!(t.parse::<Tag>().is_err(), "{t}");
        }
    }

    #[test]
    fn references() {
        assert!(matches!("latest".parse(), Ok(Reference::Tag(_))));
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert!(matches!(d.parse(), Ok(Reference::Digest(_))));
        assert!("has:colon".parse::<Reference>().is_err());
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Names of the spec's grammar: components joined by `/`.
    fn valid_name() -> impl Strategy<Value = String> {
        proptest::collection::vec("[a-z0-9]{1,6}((\\.|_|__|-{1,3})[a-z0-9]{1,6}){0,2}", 1..5)
            .prop_map(|c| c.join("/"))
            .prop_filter("at most 255 characters", |n| n.len() <= MAX_NAME_LEN)
    }

    proptest! {
        #[test]
        fn any_text_parses_or_is_refused(s in "\\PC{0,300}") {
            let _ = s.parse::<RepoName>();
            let _ = s.parse::<Tag>();
            let _ = s.parse::<Reference>();
        }

        #[test]
        fn names_of_the_grammar_are_taken_and_print_as_read(name in valid_name()) {
            let n: RepoName = name.parse().unwrap();
            prop_assert_eq!(n.as_str(), name.as_str());
        }

        #[test]
        fn tags_of_the_grammar_are_taken_and_print_as_read(tag in "[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}") {
            let t: Tag = tag.parse().unwrap();
            prop_assert_eq!(t.as_str(), tag.as_str());
            let r: Reference = tag.parse().unwrap();
            prop_assert_eq!(r.to_string(), tag);
        }

        #[test]
        fn no_parsed_name_escapes_its_directory(s in "[a-z0-9./_-]{1,40}") {
            if let Ok(n) = s.parse::<RepoName>() {
                prop_assert!(!n.as_str().split('/').any(|c| c == "." || c == ".." || c.is_empty()));
                prop_assert!(!n.as_str().starts_with('/'));
            }
        }
    }
}
