//! Job secrets encrypted at rest (XChaCha20-Poly1305), so a copy of etcd or
//! of the standalone store file does not hold them in clear. The key file
//! (`--secrets-key-file`) holds one base64 key of 32 bytes per line: the
//! first seals, every line opens (rotation: put the new key first, keep the
//! old ones below until every job has been saved again, then drop them).
//! Each sealed record is bound to its job id (associated data), so a sealed
//! record copied to another job does not open.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use ingest_model::SecretsRecord;
use serde::{Deserialize, Serialize};

/// The keys of `--secrets-key-file`; the first seals.
#[derive(Clone)]
pub struct SecretsKeys {
    keys: Vec<(String, XChaCha20Poly1305)>,
}

impl std::fmt::Debug for SecretsKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_struct("SecretsKeys").field("key_ids", &ids).finish()
    }
}

/// A sealed record as stored: which key, the nonce and the ciphertext.
#[derive(Serialize, Deserialize)]
struct Sealed {
    key: String,
    nonce: String,
    data: String,
}

#[derive(Serialize, Deserialize)]
struct SealedRecord {
    sealed: Sealed,
}

impl SecretsKeys {
    /// Reads the key file; every line a base64 key of 32 bytes (blank lines
    /// and `#` comments skipped).
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("--secrets-key-file: cannot read {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("--secrets-key-file {}: {e}", path.display()))
    }

    fn parse(text: &str) -> Result<Self, String> {
        let mut keys = Vec::new();
        for (n, line) in text.lines().enumerate().map(|(n, l)| (n + 1, l.trim())) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bytes = STANDARD.decode(line).map_err(|_| format!("line {n} is not base64"))?;
            let cipher = XChaCha20Poly1305::new_from_slice(&bytes).map_err(|_| {
                format!("line {n} is {} bytes, not 32 (make one with: head -c 32 /dev/urandom | base64)", bytes.len())
            })?;
            // A short public name for the key, so records say which one sealed them.
            let id = format!("k{:08x}", xxhash_rust::xxh3::xxh3_64(&bytes) as u32);
            keys.push((id, cipher));
        }
        if keys.is_empty() {
            return Err("holds no key (one base64 key of 32 bytes per line)".into());
        }
        Ok(Self { keys })
    }

    /// The stored form of `record`, sealed with the first key.
    pub fn seal(&self, job_id: &str, record: &SecretsRecord) -> Result<Vec<u8>, String> {
        let (id, cipher) = &self.keys[0];
        let plain = serde_json::to_vec(record).map_err(|e| format!("encoding secrets: {e}"))?;
        let nonce_bytes: [u8; 24] = rand::random();
        let nonce = XNonce::from(nonce_bytes);
        let data = cipher
            .encrypt(&nonce, Payload { msg: &plain, aad: job_id.as_bytes() })
            .map_err(|_| "sealing secrets failed".to_string())?;
        let sealed = SealedRecord {
            sealed: Sealed { key: id.clone(), nonce: STANDARD.encode(nonce_bytes), data: STANDARD.encode(data) },
        };
        serde_json::to_vec(&sealed).map_err(|e| format!("encoding sealed secrets: {e}"))
    }
}

/// The secrets of job `job_id` from their stored form: sealed (opened with
/// the key that sealed them) or, from before encryption was turned on, in
/// clear. An error says what to do; it never holds a secret.
pub fn open(keys: Option<&SecretsKeys>, job_id: &str, stored: &[u8]) -> Result<SecretsRecord, String> {
    if let Ok(sealed) = serde_json::from_slice::<SealedRecord>(stored) {
        let Some(keys) = keys else {
            return Err("the secrets are encrypted: give the key with --secrets-key-file".into());
        };
        let sealed = sealed.sealed;
        let Some((_, cipher)) = keys.keys.iter().find(|(id, _)| *id == sealed.key) else {
            return Err(format!(
                "the secrets were sealed with key {} which --secrets-key-file does not hold (keep old keys below the new one while rotating)",
                sealed.key
            ));
        };
        let nonce: [u8; 24] = STANDARD
            .decode(&sealed.nonce)
            .ok()
            .and_then(|n| n.try_into().ok())
            .ok_or("the sealed secrets are damaged (nonce)")?;
        let data = STANDARD.decode(&sealed.data).map_err(|_| "the sealed secrets are damaged (data)")?;
        let plain = cipher
            .decrypt(&XNonce::from(nonce), Payload { msg: &data, aad: job_id.as_bytes() })
            .map_err(|_| "the sealed secrets do not open with their key (damaged, or copied from another job)")?;
        return serde_json::from_slice(&plain).map_err(|e| format!("the opened secrets do not decode: {e}"));
    }
    serde_json::from_slice(stored).map_err(|e| format!("the secrets record does not decode: {e}"))
}

/// The stored form of `record`: sealed with `keys`, else in clear.
pub fn store(keys: Option<&SecretsKeys>, job_id: &str, record: &SecretsRecord) -> Result<Vec<u8>, String> {
    match keys {
        Some(keys) => keys.seal(job_id, record),
        None => serde_json::to_vec(record).map_err(|e| format!("encoding secrets: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> SecretsRecord {
        SecretsRecord { values: [("api_key".to_string(), "s3cret-value".to_string())].into() }
    }

    #[test]
    fn sealed_records_open_with_their_key_only_for_their_job() {
        let old = SecretsKeys::parse(&STANDARD.encode([1u8; 32])).unwrap();
        let sealed = store(Some(&old), "job-1", &record()).unwrap();
        let text = String::from_utf8_lossy(&sealed);
        assert!(!text.contains("s3cret") && !text.contains("api_key"), "{text}");
        assert_eq!(open(Some(&old), "job-1", &sealed).unwrap(), record());
        // Another job's record, no key, a key file without the sealing key: clear errors.
        assert!(open(Some(&old), "job-2", &sealed).unwrap_err().contains("another job"));
        assert!(open(None, "job-1", &sealed).unwrap_err().contains("--secrets-key-file"));
        let new = SecretsKeys::parse(&STANDARD.encode([2u8; 32])).unwrap();
        assert!(open(Some(&new), "job-1", &sealed).unwrap_err().contains("does not hold"));
        // Rotation: the new key first, the old one below; old records still open, new ones use the new key.
        let both =
            SecretsKeys::parse(&format!("{}\n# old\n{}\n", STANDARD.encode([2u8; 32]), STANDARD.encode([1u8; 32])))
                .unwrap();
        assert_eq!(open(Some(&both), "job-1", &sealed).unwrap(), record());
        let resealed = store(Some(&both), "job-1", &record()).unwrap();
        assert_eq!(open(Some(&new), "job-1", &resealed).unwrap(), record());
        // Records from before encryption still open.
        let clear = store(None, "job-1", &record()).unwrap();
        assert_eq!(open(Some(&both), "job-1", &clear).unwrap(), record());
        // Two seals of the same record differ (fresh nonces).
        assert_ne!(store(Some(&old), "job-1", &record()).unwrap(), sealed);
        assert!(!format!("{both:?}").contains("AQEB"), "keys never in Debug");
    }

    #[test]
    fn bad_key_files_are_clear_errors() {
        assert!(SecretsKeys::parse("").unwrap_err().contains("no key"));
        assert!(SecretsKeys::parse("not base64!").unwrap_err().contains("line 1 is not base64"));
        assert!(SecretsKeys::parse(&STANDARD.encode([0u8; 16])).unwrap_err().contains("16 bytes, not 32"));
        let missing = SecretsKeys::from_file(Path::new("/nonexistent/key")).unwrap_err();
        assert!(missing.contains("--secrets-key-file") && missing.contains("/nonexistent/key"), "{missing}");
    }
}
