//! The key layout, one key per job and concern (DESIGN.md §2):
//!
//! ```text
//! <root>jobs/<id>      job spec                       (control writes)
//! <root>secrets/<id>   secret params, never returned  (control writes)
//! <root>types/<type>   parameter spec of a job type   (workers publish)
//! <root>workers/<w>    worker registration            (under the worker's lease)
//! <root>owners/<id>    claim; create_revision = epoch (under the owner's lease)
//! <root>state/<id>     checkpoint                     (owner, fenced by epoch)
//! <root>stats/<id>     counters                       (control, batched)
//! ```

/// The default root of every key.
pub const DEFAULT_ROOT: &str = "/ingest/v1/";

/// What a key is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    Job,
    Secret,
    Type,
    Worker,
    Owner,
    State,
    Stats,
    Runs,
    Alert,
    Load,
    Preview,
    DeadLetter,
}

impl KeyKind {
    pub const ALL: [KeyKind; 12] = [
        Self::Job,
        Self::Secret,
        Self::Type,
        Self::Worker,
        Self::Owner,
        Self::State,
        Self::Stats,
        Self::Runs,
        Self::Alert,
        Self::Load,
        Self::Preview,
        Self::DeadLetter,
    ];

    fn segment(self) -> &'static str {
        match self {
            Self::Job => "jobs/",
            Self::Secret => "secrets/",
            Self::Type => "types/",
            Self::Worker => "workers/",
            Self::Owner => "owners/",
            Self::State => "state/",
            Self::Stats => "stats/",
            Self::Runs => "runs/",
            Self::Alert => "alerts/",
            Self::Load => "load/",
            Self::Preview => "previews/",
            Self::DeadLetter => "dead/",
        }
    }
}

/// Builds and parses keys under one root, so several clusters (or tests) can
/// share an etcd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keys {
    root: String,
}

impl Default for Keys {
    fn default() -> Self {
        Self::new(DEFAULT_ROOT)
    }
}

impl Keys {
    /// Keys under `root`; a trailing '/' is added when missing.
    pub fn new(root: &str) -> Self {
        let mut root = root.to_string();
        if !root.ends_with('/') {
            root.push('/');
        }
        Self { root }
    }

    pub fn root(&self) -> &str {
        &self.root
    }

    /// The prefix of every key of `kind`.
    pub fn prefix(&self, kind: KeyKind) -> String {
        format!("{}{}", self.root, kind.segment())
    }

    /// The key of `name` (a job id, type or worker name) of `kind`.
    pub fn key(&self, kind: KeyKind, name: &str) -> String {
        format!("{}{}{}", self.root, kind.segment(), name)
    }

    pub fn job(&self, id: &str) -> String {
        self.key(KeyKind::Job, id)
    }

    pub fn secret(&self, id: &str) -> String {
        self.key(KeyKind::Secret, id)
    }

    pub fn job_type(&self, name: &str) -> String {
        self.key(KeyKind::Type, name)
    }

    pub fn worker(&self, name: &str) -> String {
        self.key(KeyKind::Worker, name)
    }

    pub fn owner(&self, id: &str) -> String {
        self.key(KeyKind::Owner, id)
    }

    pub fn state(&self, id: &str) -> String {
        self.key(KeyKind::State, id)
    }

    pub fn stats(&self, id: &str) -> String {
        self.key(KeyKind::Stats, id)
    }

    pub fn runs(&self, id: &str) -> String {
        self.key(KeyKind::Runs, id)
    }

    pub fn alert(&self, id: &str) -> String {
        self.key(KeyKind::Alert, id)
    }

    pub fn load(&self, worker: &str) -> String {
        self.key(KeyKind::Load, worker)
    }

    pub fn preview(&self, id: &str) -> String {
        self.key(KeyKind::Preview, id)
    }

    /// The prefix of one job's dead letters (`dead/<job>/`).
    pub fn dead_letters(&self, job: &str) -> String {
        self.key(KeyKind::DeadLetter, &format!("{job}/"))
    }

    pub fn dead_letter(&self, job: &str, letter: &str) -> String {
        self.key(KeyKind::DeadLetter, &format!("{job}/{letter}"))
    }

    /// Splits a key into its kind and name; `None` for keys outside the
    /// layout.
    pub fn parse<'k>(&self, key: &'k str) -> Option<(KeyKind, &'k str)> {
        let rest = key.strip_prefix(self.root.as_str())?;
        KeyKind::ALL.into_iter().find_map(|kind| {
            let name = rest.strip_prefix(kind.segment())?;
            (!name.is_empty()).then_some((kind, name))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_parse() {
        let keys = Keys::new("/t1");
        for kind in KeyKind::ALL {
            let key = keys.key(kind, "abc-1");
            assert!(key.starts_with("/t1/"), "{key}");
            assert_eq!(keys.parse(&key), Some((kind, "abc-1")));
        }
    }

    #[test]
    fn parse_rejects_foreign_and_empty_names() {
        let keys = Keys::default();
        assert_eq!(keys.parse("/other/jobs/a"), None);
        assert_eq!(keys.parse("/ingest/v1/jobs/"), None);
        assert_eq!(keys.parse("/ingest/v1/nope/a"), None);
    }
}
