//! Bearer tokens and their roles, from `--token` or `--token-file`.
//!
//! A token file holds one token per line, optionally preceded by its role:
//!
//! ```text
//! # comments and blank lines are ignored
//! admin  9f2c…      # everything
//! read   41aa…      # Get/List/Watch, ListJobTypes, ListWorkers; the UI read-only
//! worker 77d0…      # WorkerService only (progress reports)
//! 5be1…             # a bare token is an admin token
//! ```
//!
//! Several tokens of one role may be listed at once, so a token is rotated
//! by adding the new one, moving clients over, then removing the old one;
//! control re-reads the file when it changes. A worker given such a file
//! uses its first `worker` token, else its first `admin` token.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::Secret;

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Read jobs, job types and workers; watch jobs.
    Read,
    /// Report progress (WorkerService) and nothing else.
    Worker,
    /// Everything, WorkerService included.
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Read, Role::Worker, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Worker => "worker",
            Role::Admin => "admin",
        }
    }

    /// Whether a token of this role may make a call that needs `needed`.
    pub fn grants(self, needed: Role) -> bool {
        self == Role::Admin || self == needed
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role '{s}' (expected read, worker or admin)"))
    }
}

/// A set of tokens, each with its role. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Tokens {
    entries: Vec<(String, Role)>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokens").field("count", &self.entries.len()).finish()
    }
}

impl Tokens {
    /// One admin token (`--token`, or a file with a bare token).
    pub fn single(token: &str) -> Result<Self, String> {
        check_token(token)?;
        Ok(Self { entries: vec![(token.to_string(), Role::Admin)] })
    }

    /// Parses a token file (see the module documentation). Errors name the
    /// line, never the token.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut entries: Vec<(String, Role)> = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = raw.split_once('#').map_or(raw, |(before, _)| before).trim();
            if line.is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (role, token) = match fields.as_slice() {
                [token] => (Role::Admin, *token),
                [role, token] => (role.parse().map_err(|e| format!("line {}: {e}", index + 1))?, *token),
                _ => return Err(format!("line {}: expected '<role> <token>' or '<token>'", index + 1)),
            };
            check_token(token).map_err(|e| format!("line {}: {e}", index + 1))?;
            if entries.iter().any(|(t, _)| t == token) {
                return Err(format!("line {}: this token is already listed above", index + 1));
            }
            entries.push((token.to_string(), role));
        }
        if entries.is_empty() {
            return Err("no token in it".to_string());
        }
        Ok(Self { entries })
    }

    /// The role of `given`, if it is one of these tokens. Compares every
    /// token in full, so timing does not reveal how much of a guess was right.
    pub fn role_of(&self, given: &str) -> Option<Role> {
        let mut found = None;
        for (token, role) in &self.entries {
            if constant_time_eq(token.as_bytes(), given.as_bytes()) {
                found = Some(*role);
            }
        }
        found
    }

    /// The token a client of `role` sends: the first one of that role, else
    /// the first admin token.
    pub fn for_role(&self, role: Role) -> Option<&str> {
        let first = |wanted: Role| self.entries.iter().find(|(_, r)| *r == wanted).map(|(t, _)| t.as_str());
        first(role).or_else(|| first(Role::Admin))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many tokens of each role, for logs: "admin=1 read=2".
    pub fn summary(&self) -> String {
        Role::ALL
            .into_iter()
            .filter_map(|role| {
                let n = self.entries.iter().filter(|(_, r)| *r == role).count();
                (n > 0).then(|| format!("{role}={n}"))
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Tokens go into an `authorization` header: visible ASCII, no spaces.
fn check_token(token: &str) -> Result<(), String> {
    if token.is_empty() {
        return Err("the token is empty; set a token or leave it unset to disable auth".to_string());
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("a token may hold only visible ASCII characters".to_string());
    }
    Ok(())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Where the tokens come from: `--token` (one admin token) or
/// `--token-file` (re-read when it changes), or neither (no auth).
#[derive(Clone, Debug, Default)]
pub struct TokenSource {
    pub token: Option<Secret>,
    pub file: Option<PathBuf>,
}

impl TokenSource {
    pub fn new(token: Option<&Secret>, file: Option<&Path>) -> Self {
        Self { token: token.cloned(), file: file.map(Path::to_path_buf) }
    }

    /// The tokens now, or `None` when auth is off.
    pub fn load(&self) -> anyhow::Result<Option<Tokens>> {
        if let Some(path) = &self.file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --token-file {}", path.display()))?;
            return Tokens::parse(&text).map(Some).map_err(|e| anyhow::anyhow!("--token-file {}: {e}", path.display()));
        }
        match &self.token {
            Some(token) => Tokens::single(token.expose()).map(Some).map_err(|e| anyhow::anyhow!("--token: {e}")),
            None => Ok(None),
        }
    }

    /// The token a client of `role` sends, read now (so a rotated file is
    /// picked up at the next connection).
    pub fn token_for(&self, role: Role) -> anyhow::Result<Option<String>> {
        let Some(tokens) = self.load()? else { return Ok(None) };
        match tokens.for_role(role) {
            Some(token) => Ok(Some(token.to_string())),
            None => anyhow::bail!("the token file has no {role} or admin token"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_token_is_admin_and_roles_are_read() {
        let tokens =
            Tokens::parse("# rotation in progress\nadmin a1\n\nread r1  # dashboards\nread r2\nworker w1\nb0\n")
                .expect("valid file");
        assert_eq!(tokens.len(), 5);
        assert_eq!(tokens.role_of("a1"), Some(Role::Admin));
        assert_eq!(tokens.role_of("b0"), Some(Role::Admin));
        assert_eq!(tokens.role_of("r2"), Some(Role::Read));
        assert_eq!(tokens.role_of("w1"), Some(Role::Worker));
        assert_eq!(tokens.role_of("r"), None);
        assert_eq!(tokens.role_of("r1 "), None);
        assert_eq!(tokens.summary(), "read=2 worker=1 admin=2");
        assert_eq!(tokens.for_role(Role::Worker), Some("w1"));
        assert_eq!(Tokens::parse("admin a\nread r").expect("valid").for_role(Role::Worker), Some("a"));
    }

    #[test]
    fn bad_files_name_the_line_not_the_token() {
        for (text, expected) in [
            ("", "no token"),
            ("# only a comment\n", "no token"),
            ("reader s3cret", "line 1: unknown role 'reader'"),
            ("admin a\nread b c", "line 2: expected"),
            ("admin a\nread a", "line 2: this token is already listed"),
        ] {
            let err = Tokens::parse(text).expect_err(text);
            assert!(err.starts_with(expected), "{text:?}: {err}");
            assert!(!err.contains("s3cret"), "{err}");
        }
        assert!(Tokens::single("").is_err());
        assert!(Tokens::single("tab\there").is_err());
    }

    #[test]
    fn roles_grant_their_own_calls_and_admin_grants_all() {
        assert!(Role::Admin.grants(Role::Read) && Role::Admin.grants(Role::Worker));
        assert!(Role::Read.grants(Role::Read) && !Role::Read.grants(Role::Admin) && !Role::Read.grants(Role::Worker));
        assert!(Role::Worker.grants(Role::Worker) && !Role::Worker.grants(Role::Read));
    }

    #[test]
    fn a_token_file_is_read_again_at_each_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tokens");
        std::fs::write(&path, "old\n").expect("write");
        let source = TokenSource::new(None, Some(&path));
        assert_eq!(source.token_for(Role::Worker).expect("load").as_deref(), Some("old"));
        std::fs::write(&path, "worker new\nadmin other\n").expect("write");
        assert_eq!(source.token_for(Role::Worker).expect("load").as_deref(), Some("new"));
        std::fs::write(&path, "read only\n").expect("write");
        assert!(source.token_for(Role::Worker).is_err());
        assert_eq!(TokenSource::default().load().expect("no auth"), None);
    }
}
