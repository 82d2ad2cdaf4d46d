//! Per-repository rights (our extension, the top-level `access` section):
//! rules that grant actions on repository name patterns to users, groups,
//! every logged-in user (`*`) or anonymous clients (`anonymous`).

use std::collections::{BTreeMap, HashSet};

use crate::config::{AccessConfig, AccessRule};

/// What a request does to a repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Pull,
    Push,
    Delete,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
        }
    }
}

/// Who is asking.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal<'a> {
    Anonymous,
    User(&'a str),
}

pub struct Rules {
    groups: BTreeMap<String, HashSet<String>>,
    rules: Vec<AccessRule>,
}

impl Rules {
    pub fn new(config: &AccessConfig) -> Option<Rules> {
        if config.rules.is_empty() {
            return None;
        }
        Some(Rules {
            groups: config
                .groups
                .iter()
                .map(|(g, users)| (g.clone(), users.iter().cloned().collect()))
                .collect(),
            rules: config.rules.clone(),
        })
    }

    /// Whether any rule grants `action` on `repo` to `who`. Push implies
    /// pull: a client must see what is there to push beside it.
    pub fn allows(&self, who: &Principal, repo: &str, action: Action) -> bool {
        self.rules.iter().any(|rule| {
            rule.users.iter().any(|u| self.names(u, who))
                && rule.repositories.iter().any(|p| glob(p, repo))
                && rule.actions.iter().any(|a| {
                    a == "*" || a == action.as_str() || (action == Action::Pull && a == "push")
                })
        })
    }

    /// Whether any rule grants anything to `who` (for `_catalog`).
    pub fn grants_any(&self, who: &Principal) -> bool {
        self.rules
            .iter()
            .any(|rule| rule.users.iter().any(|u| self.names(u, who)))
    }

    fn names(&self, pattern: &str, who: &Principal) -> bool {
        match (pattern, who) {
            ("anonymous", Principal::Anonymous) => true,
            (_, Principal::Anonymous) => false,
            ("*", Principal::User(_)) => true,
            (p, Principal::User(u)) => match p.strip_prefix('@') {
                Some(group) => self.groups.get(group).is_some_and(|g| g.contains(*u)),
                None => p == *u,
            },
        }
    }
}

/// `*` matches any run of characters, `/` included; everything else is literal.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("*", "a/b/c"));
        assert!(glob("team-a/*", "team-a/x"));
        assert!(glob("team-a/*", "team-a/x/y"));
        assert!(!glob("team-a/*", "team-ab/x"));
        assert!(!glob("team-a/*", "team-a"));
        assert!(glob("*/base", "lib/base"));
        assert!(glob("exact", "exact"));
        assert!(!glob("exact", "exact2"));
        assert!(glob("a*c*e", "abcde"));
    }

    #[test]
    fn rules() {
        let cfg = AccessConfig {
            groups: [("ci".to_string(), vec!["bot".to_string()])].into(),
            rules: vec![
                AccessRule {
                    repositories: vec!["team-a/*".into()],
                    users: vec!["@ci".into()],
                    actions: vec!["push".into()],
                },
                AccessRule {
                    repositories: vec!["*".into()],
                    users: vec!["*".into()],
                    actions: vec!["pull".into()],
                },
                AccessRule {
                    repositories: vec!["public/*".into()],
                    users: vec!["anonymous".into()],
                    actions: vec!["pull".into()],
                },
                AccessRule {
                    repositories: vec!["*".into()],
                    users: vec!["admin".into()],
                    actions: vec!["*".into()],
                },
            ],
        };
        let r = Rules::new(&cfg).unwrap();
        let bot = Principal::User("bot");
        let eve = Principal::User("eve");
        let admin = Principal::User("admin");
        assert!(r.allows(&bot, "team-a/app", Action::Push));
        assert!(r.allows(&bot, "team-a/app", Action::Pull));
        assert!(!r.allows(&bot, "team-a/app", Action::Delete));
        assert!(!r.allows(&bot, "team-b/app", Action::Push));
        assert!(r.allows(&eve, "team-b/app", Action::Pull));
        assert!(!r.allows(&eve, "team-a/app", Action::Push));
        assert!(r.allows(&Principal::Anonymous, "public/x", Action::Pull));
        assert!(!r.allows(&Principal::Anonymous, "team-a/x", Action::Pull));
        assert!(r.allows(&admin, "anything", Action::Delete));
        assert!(r.grants_any(&Principal::Anonymous));
    }
}
