//! A job's dead letters: listed by the owner under `dead/<job>/`, shown,
//! flagged for replay (the owner sends them again) and purged here.

use ingest_model::DeadLetterRecord;
use ingest_store::keys::KeyKind;
use ingest_store::{Compare, CompareOp, KeyRange, KeyValue, RangeRequest, Txn, TxnOp, prefix_end};

use crate::error::ControlError;
use crate::service::{ControlService, check_id_field};
use crate::views::decode;

pub const DEFAULT_PAGE: usize = 50;
pub const MAX_PAGE: usize = 500;

/// One dead letter as listed: its name under the job and its record.
#[derive(Clone, Debug)]
pub struct Letter {
    pub name: String,
    pub record: DeadLetterRecord,
}

/// A page of a job's dead letters.
#[derive(Clone, Debug)]
pub struct LetterPage {
    pub letters: Vec<Letter>,
    pub next_after: Option<String>,
    pub total: u64,
}

impl ControlService {
    pub async fn list_dead_letters(
        &self,
        job_id: &str,
        page_size: usize,
        after: Option<&str>,
    ) -> Result<LetterPage, ControlError> {
        self.existing_job(job_id).await?;
        if let Some(after) = after {
            check_letter_name("page_token", after)?;
        }
        let limit = if page_size == 0 { DEFAULT_PAGE } else { page_size.min(MAX_PAGE) };
        let prefix = self.keys().dead_letters(job_id);
        let from = after.map_or_else(|| prefix.clone(), |a| format!("{prefix}{a}\0"));
        let range = RangeRequest::new(KeyRange::between(from, prefix_end(&prefix))).limit(limit as i64);
        let (page, total) =
            futures::try_join!(async { Ok::<_, ControlError>(self.store().range(range).await?) }, async {
                let count = RangeRequest::new(KeyRange::prefix(prefix.clone())).count_only();
                Ok::<_, ControlError>(self.store().range(count).await?.count as u64)
            })?;
        let letters: Vec<Letter> = page.kvs.iter().filter_map(|kv| self.letter(kv)).collect();
        let next_after = page.more.then(|| letters.last().map(|l| l.name.clone())).flatten();
        Ok(LetterPage { letters, next_after, total })
    }

    pub async fn get_dead_letter(&self, job_id: &str, name: &str) -> Result<Letter, ControlError> {
        check_id_field("job_id", job_id)?;
        check_letter_name("letter_id", name)?;
        let kv = self.store().get(&self.keys().dead_letter(job_id, name)).await?;
        kv.as_ref()
            .and_then(|kv| self.letter(kv))
            .ok_or_else(|| ControlError::NotFound { what: "dead letter", id: format!("{job_id}/{name}") })
    }

    /// Flags the letters (all of the job's when `names` is empty) for the
    /// owner to send again; returns how many were flagged.
    pub async fn replay_dead_letters(&self, job_id: &str, names: &[String]) -> Result<u64, ControlError> {
        self.existing_job(job_id).await?;
        if self.store().get(&self.keys().owner(job_id)).await?.is_none() {
            return Err(ControlError::FailedPrecondition(format!(
                "job '{job_id}' has no owner to send its dead letters again: resume it (or start a worker of its type), then replay"
            )));
        }
        let mut flagged = 0;
        for kv in self.picked_letters(job_id, names).await? {
            let Some(mut record) = decode::<DeadLetterRecord>(&kv) else { continue };
            record.replay = true;
            let value = serde_json::to_vec(&record).map_err(|e| ControlError::Internal(e.to_string()))?;
            let guard = Compare::mod_revision(kv.key.clone(), CompareOp::Equal, kv.mod_revision);
            let response = self.store().txn(Txn::new().when([guard]).and_then([TxnOp::put(kv.key, value)])).await?;
            flagged += u64::from(response.succeeded);
        }
        tracing::info!(job = %job_id, flagged, "dead letters to send again");
        Ok(flagged)
    }

    /// Forgets the letters (all of the job's when `names` is empty).
    pub async fn purge_dead_letters(&self, job_id: &str, names: &[String]) -> Result<u64, ControlError> {
        self.existing_job(job_id).await?;
        let purged = if names.is_empty() {
            let range = KeyRange::prefix(self.keys().dead_letters(job_id));
            let count = self.store().range(RangeRequest::new(range.clone()).count_only()).await?.count as u64;
            self.store().txn(Txn::new().and_then([TxnOp::delete_range(range)])).await?;
            count
        } else {
            let kvs = self.picked_letters(job_id, names).await?;
            let deletes: Vec<TxnOp> = kvs.iter().map(|kv| TxnOp::delete(kv.key.clone())).collect();
            for chunk in deletes.chunks(64) {
                self.store().txn(Txn::new().and_then(chunk.to_vec())).await?;
            }
            kvs.len() as u64
        };
        tracing::info!(job = %job_id, purged, "dead letters purged");
        Ok(purged)
    }

    /// The records of `names` (every one of the job's when empty).
    async fn picked_letters(&self, job_id: &str, names: &[String]) -> Result<Vec<KeyValue>, ControlError> {
        if names.is_empty() {
            return crate::views::scan_prefix(self.store().as_ref(), self.keys().dead_letters(job_id)).await;
        }
        if names.len() > MAX_PAGE {
            return Err(ControlError::invalid("letter_ids", format!("at most {MAX_PAGE} per call")));
        }
        let mut kvs = Vec::new();
        for (i, name) in names.iter().enumerate() {
            check_letter_name(&format!("letter_ids[{i}]"), name)?;
            if let Some(kv) = self.store().get(&self.keys().dead_letter(job_id, name)).await? {
                kvs.push(kv);
            }
        }
        Ok(kvs)
    }

    async fn existing_job(&self, job_id: &str) -> Result<(), ControlError> {
        check_id_field("job_id", job_id)?;
        let exists = self.store().get(&self.keys().job(job_id)).await?.is_some();
        if exists { Ok(()) } else { Err(ControlError::NotFound { what: "job", id: job_id.to_string() }) }
    }

    fn letter(&self, kv: &KeyValue) -> Option<Letter> {
        let (KeyKind::DeadLetter, name) = self.keys().parse(&kv.key)? else { return None };
        let (_, letter) = name.split_once('/')?;
        Some(Letter { name: letter.to_string(), record: decode(kv)? })
    }
}

/// A letter's name: the 64 hex digits of a SHA-256.
fn check_letter_name(field: &str, name: &str) -> Result<(), ControlError> {
    if name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(ControlError::invalid(field, "not a dead letter id (64 hexadecimal digits, as ListDeadLetters gives)"))
    }
}
