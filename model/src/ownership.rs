//! The ownership events every worker logs (target `ingest::ownership`, field
//! `own`), so a checker over the logs of a whole cluster can prove at most one
//! owner per job at any instant, bounded unowned gaps, and epochs that never
//! go backwards. One definition for the workers that write them and the
//! checkers that read them.

/// What happened to a claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ownership {
    /// The claim transaction succeeded.
    Claim,
    /// The job's runner starts doing work.
    Start,
    /// The runner has fully stopped: no more work from this worker.
    Stop,
    /// The owner deleted its claim.
    Release,
    /// The owner learned it lost the claim (fenced write failed, lease
    /// deadline passed); a `Stop` follows.
    Lost,
    /// A fenced checkpoint write succeeded.
    Write,
}

impl Ownership {
    pub const ALL: [Ownership; 6] =
        [Ownership::Claim, Ownership::Start, Ownership::Stop, Ownership::Release, Ownership::Lost, Ownership::Write];

    /// The `own` field of the log line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Claim => "claim",
            Self::Start => "start",
            Self::Stop => "stop",
            Self::Release => "release",
            Self::Lost => "lost",
            Self::Write => "write",
        }
    }

    pub fn parse(s: &str) -> Option<Ownership> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_reads_back() {
        for kind in Ownership::ALL {
            assert_eq!(Ownership::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(Ownership::parse("owned"), None);
    }
}
