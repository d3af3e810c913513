//! A job's own secret values, blanked out of what it reports: an upstream
//! that echoes request headers in an error body must not put the bearer token
//! into the job's last error (GetJob, ListJobs, WatchJobs) or the log.

/// What replaces a secret value.
pub const REDACTED: &str = "[redacted]";

/// Shorter values are not hunted for (they would blank ordinary words).
const MIN_LEN: usize = 4;

/// The secret values of one job, and the forms they travel in.
#[derive(Clone, Default)]
pub struct Redactor {
    needles: Vec<String>,
}

impl Redactor {
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Self {
        let mut needles = Vec::new();
        for secret in secrets.into_iter().filter(|s| s.len() >= MIN_LEN) {
            needles.push(secret.to_string());
            // In a query string or an OAuth header, percent-encoded.
            let encoded = percent_encoding::utf8_percent_encode(secret, percent_encoding::NON_ALPHANUMERIC).to_string();
            if encoded != secret {
                needles.push(encoded);
            }
        }
        // Longest first, so a secret containing another is blanked whole.
        needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
        needles.dedup();
        Self { needles }
    }

    /// `text` with every secret value replaced by [`REDACTED`].
    pub fn apply(&self, text: &str) -> String {
        let mut text = text.to_string();
        for needle in &self.needles {
            if text.contains(needle.as_str()) {
                text = text.replace(needle.as_str(), REDACTED);
            }
        }
        text
    }
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor({} values)", self.needles.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_blanked_in_every_form() {
        let redactor = Redactor::new(["s3cr3t/token+x", "abc", "s3cr3t"]);
        let echoed =
            "401: {\"headers\": {\"Authorization\": \"Bearer s3cr3t/token+x\"}, \"q\": \"key=s3cr3t%2Ftoken%2Bx\"}";
        let clean = redactor.apply(echoed);
        assert!(!clean.contains("s3cr3t"), "{clean}");
        assert_eq!(clean.matches(REDACTED).count(), 2, "{clean}");
        assert_eq!(redactor.apply("abc is too short to hunt"), "abc is too short to hunt");
        assert!(!format!("{redactor:?}").contains("s3cr3t"));
    }
}
