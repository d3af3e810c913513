//! Who should run a job: weighted rendezvous hashing (HRW). Every worker
//! ranks the eligible workers for a job the same way from the same view, with
//! no coordination. Adding a worker moves to it exactly the jobs it now ranks
//! first for, and nothing moves between the others; removing one spreads its
//! jobs over the rest in proportion to their weights.

use xxhash_rust::xxh3::xxh3_64;

/// A worker that may run a job, with its relative weight.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate<'a> {
    pub name: &'a str,
    pub weight: f64,
}

/// The HRW score of `worker` for `job`: −weight / ln(u), u ∈ (0, 1) a hash
/// of both names. Higher is better.
pub fn score(job: &str, worker: &str, weight: f64) -> f64 {
    let mut key = Vec::with_capacity(job.len() + worker.len() + 1);
    key.extend_from_slice(job.as_bytes());
    key.push(0xff); // not valid UTF-8: no (job, worker) split can collide
    key.extend_from_slice(worker.as_bytes());
    // 53 random bits, centred in their interval so u is never 0 or 1.
    let u = ((xxh3_64(&key) >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    -weight / u.ln()
}

/// The candidates ranked best first (ties by name, so every peer agrees).
pub fn rank<'a>(job: &str, candidates: &[Candidate<'a>]) -> Vec<&'a str> {
    let mut scored: Vec<(f64, &'a str)> = candidates.iter().map(|c| (score(job, c.name, c.weight), c.name)).collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    scored.into_iter().map(|(_, name)| name).collect()
}

/// The worker ranked first for `job` (what [`rank`] puts first, without
/// ranking the rest).
pub fn first<'a>(job: &str, candidates: &[Candidate<'a>]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (score(job, c.name, c.weight), c.name))
        .max_by(|a, b| a.0.total_cmp(&b.0).then_with(|| b.1.cmp(a.1)))
        .map(|(_, name)| name)
}

/// The position of `worker` in the ranking (0 = first), `None` if it is not a
/// candidate.
pub fn position(job: &str, worker: &str, candidates: &[Candidate<'_>]) -> Option<usize> {
    let mine = candidates.iter().find(|c| c.name == worker)?;
    let my_score = score(job, worker, mine.weight);
    let better = candidates
        .iter()
        .filter(|c| c.name != worker)
        .filter(|c| {
            let s = score(job, c.name, c.weight);
            s > my_score || (s == my_score && c.name < worker)
        })
        .count();
    Some(better)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn jobs(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("job-{i:05}")).collect()
    }

    fn owners<'a>(jobs: &[String], candidates: &[Candidate<'a>]) -> Vec<&'a str> {
        jobs.iter().map(|j| rank(j, candidates)[0]).collect()
    }

    fn equal(names: &[&'static str]) -> Vec<Candidate<'static>> {
        names.iter().map(|n| Candidate { name: n, weight: 1.0 }).collect()
    }

    #[test]
    fn joining_moves_only_to_the_newcomer_about_one_share() {
        let jobs = jobs(10_000);
        let before = owners(&jobs, &equal(&["a", "b", "c"]));
        let after = owners(&jobs, &equal(&["a", "b", "c", "d"]));
        let moved: Vec<(&str, &str)> =
            before.iter().zip(&after).filter(|(b, a)| b != a).map(|(b, a)| (*b, *a)).collect();
        assert!(moved.iter().all(|(_, to)| *to == "d"), "jobs moved between old workers");
        // J/4 = 2500; binomial σ = sqrt(J·p·(1−p)) ≈ 43.3; allow 3σ.
        let expected = 2500.0;
        let sigma = (10_000.0f64 * 0.25 * 0.75).sqrt();
        assert!(((moved.len() as f64) - expected).abs() <= 3.0 * sigma, "moved {}", moved.len());
    }

    #[test]
    fn leaving_spreads_only_the_leavers_jobs() {
        let jobs = jobs(10_000);
        let before = owners(&jobs, &equal(&["a", "b", "c", "d"]));
        let after = owners(&jobs, &equal(&["a", "b", "c"]));
        let mut received: HashMap<&str, usize> = HashMap::new();
        for (b, a) in before.iter().zip(&after) {
            if b != a {
                assert_eq!(*b, "d", "only the leaver's jobs move");
                *received.entry(a).or_default() += 1;
            }
        }
        let total: usize = received.values().sum();
        for name in ["a", "b", "c"] {
            let share = received.get(name).copied().unwrap_or(0) as f64 / total as f64;
            assert!((share - 1.0 / 3.0).abs() < 0.05, "{name} got {share}");
        }
    }

    #[test]
    fn weights_set_the_shares() {
        let jobs = jobs(20_000);
        let candidates = vec![Candidate { name: "big", weight: 3.0 }, Candidate { name: "small", weight: 1.0 }];
        let big = owners(&jobs, &candidates).iter().filter(|o| **o == "big").count() as f64 / 20_000.0;
        assert!((big - 0.75).abs() < 0.02, "big share {big}");
    }

    #[test]
    fn position_agrees_with_rank() {
        let candidates = equal(&["a", "b", "c", "d", "e"]);
        for job in jobs(200) {
            let ranking = rank(&job, &candidates);
            for (i, name) in ranking.iter().enumerate() {
                assert_eq!(position(&job, name, &candidates), Some(i));
            }
        }
        assert_eq!(position("x", "zz", &candidates), None);
    }
}
