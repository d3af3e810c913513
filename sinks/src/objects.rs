//! Object keys and bodies. Raw payloads and media are content-addressed:
//! `<type>/<job>/<first two hex digits>/<sha256>.<ext>` — nothing in the key
//! depends on when it was stored, so storing one payload twice, on any day,
//! leaves one object.

use std::io::Write;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The key of a content-addressed object: the job and its content only.
pub fn content_key(job_type: &str, job_id: &str, content: &[u8], ext: &str) -> String {
    let hash = sha256_hex(content);
    format!("{job_type}/{job_id}/{}/{hash}.{ext}", &hash[..2])
}

/// The key of a dead letter: the rejected document with its reason.
pub fn dead_letter_key(index: &str, id: &str, day: DateTime<Utc>) -> String {
    format!("dead-letters/{index}/{}/{}.json", day.format("%Y/%m/%d"), sha256_hex(id.as_bytes()))
}

/// Gzip at the fast level (archived payloads are written far more often than read).
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder =
        flate2::write::GzEncoder::new(Vec::with_capacity(bytes.len() / 3 + 64), flate2::Compression::fast());
    // Writing to a Vec cannot fail.
    let _ = encoder.write_all(bytes);
    encoder.finish().unwrap_or_default()
}

/// Checks that a key is a relative path of plain segments (for the local
/// object store, which maps keys to files).
pub fn check_key(key: &str) -> Result<(), String> {
    let bad = key.is_empty()
        || key.len() > 1024
        || key.starts_with('/')
        || key.split('/').any(|part| part.is_empty() || part == "." || part == "..")
        || key.chars().any(|c| c.is_control() || c == '\\');
    if bad { Err(format!("'{key}' is not a valid object key")) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use chrono::TimeZone;

    use super::*;

    #[test]
    fn content_keys_are_addresses_of_the_content_only() {
        let day = Utc.with_ymd_and_hms(2026, 3, 7, 23, 59, 0).unwrap();
        let key = content_key("rss", "news-1", b"hello", "json.gz");
        assert_eq!(key, "rss/news-1/2c/2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824.json.gz");
        assert_eq!(key, content_key("rss", "news-1", b"hello", "json.gz"));
        assert_ne!(key, content_key("rss", "news-1", b"hello!", "json.gz"));
        assert_ne!(key, content_key("rss", "news-2", b"hello", "json.gz"));
        assert!(dead_letter_key("ingest-rss", "a/b", day).starts_with("dead-letters/ingest-rss/2026/03/07/"));
    }

    #[test]
    fn gzip_round_trips() {
        let text = "the same line again\n".repeat(100);
        let packed = gzip(text.as_bytes());
        assert!(packed.len() < text.len() / 5);
        let mut unpacked = String::new();
        flate2::read::GzDecoder::new(&packed[..]).read_to_string(&mut unpacked).unwrap();
        assert_eq!(unpacked, text);
    }

    #[test]
    fn keys_that_escape_the_tree_are_refused() {
        assert!(check_key("rss/job/2026/01/01/ab.json.gz").is_ok());
        for bad in ["", "/etc/passwd", "a/../b", "a//b", "./a", "a/\u{0}b", "a\\b"] {
            assert!(check_key(bad).is_err(), "{bad:?}");
        }
    }
}
