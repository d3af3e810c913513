//! A job's dead letters (documents the index refused): listed under
//! `dead/<job>/<letter>` after each run, and sent again when an operator
//! asks (`ReplayDeadLetters` flags them; the owner sees the flag and does it).

use std::sync::Arc;

use ingest_model::{DeadLetterRecord, MAX_DEAD_LETTERS_PER_JOB};
use ingest_sinks::delivery::{DeadLetter, Replayed};
use ingest_sinks::objects::sha256_hex;
use ingest_store::keys::Keys;
use ingest_store::{Compare, CompareOp, KeyRange, KeyValue, RangeRequest, Store, StoreError, Txn, TxnOp};

use crate::runner::{RunnerContext, index_spec};
use crate::spec::RunSpec;

/// Records written per transaction.
const PER_TXN: usize = 64;

/// The letter's name under its job: the SHA-256 of the document's id (a
/// document refused again replaces its earlier letter).
pub fn letter_name(document_id: &str) -> String {
    sha256_hex(document_id.as_bytes())
}

pub fn record_of(letter: &DeadLetter) -> DeadLetterRecord {
    DeadLetterRecord {
        id: letter.id.clone(),
        index: letter.index.clone(),
        status: letter.status,
        reason: letter.reason.chars().take(2000).collect(),
        key: letter.key.clone(),
        time: letter.time.timestamp_millis(),
        preview: letter.preview.clone(),
        bytes: letter.bytes as u64,
        replay: false,
    }
}

/// Lists a run's dead letters under the job, up to the per-job cap (the
/// rest stay in the object store only, which the log says).
pub async fn keep(store: &dyn Store, keys: &Keys, job_id: &str, letters: Vec<DeadLetter>) -> Result<(), StoreError> {
    if letters.is_empty() {
        return Ok(());
    }
    let prefix = keys.dead_letters(job_id);
    let held = store.range(RangeRequest::new(KeyRange::prefix(prefix)).count_only()).await?.count as usize;
    let room = MAX_DEAD_LETTERS_PER_JOB.saturating_sub(held);
    if letters.len() > room {
        tracing::warn!(
            job = %job_id, listed = held, dropped = letters.len() - room,
            "too many dead letters listed for this job; the others are in the object store only"
        );
    }
    let puts: Vec<TxnOp> = letters
        .iter()
        .take(room)
        .filter_map(|letter| {
            let value = serde_json::to_vec(&record_of(letter)).ok()?;
            Some(TxnOp::put(keys.dead_letter(job_id, &letter_name(&letter.id)), value))
        })
        .collect();
    for chunk in puts.chunks(PER_TXN) {
        store.txn(Txn::new().and_then(chunk.to_vec())).await?;
    }
    Ok(())
}

/// Sends the dead letter `kv` of `job` again, then removes its record (or
/// records the new refusal, or why it could not be sent), if the record is
/// still the one read.
pub async fn replay(ctx: Arc<RunnerContext>, job: Arc<RunSpec>, kv: KeyValue, record: DeadLetterRecord) {
    let Some(entry) = ctx.types.get(&job.job_type) else { return };
    let index = index_spec((&entry.0, &entry.1), &job.params());
    let mut output = ctx.sinks.output(&job.job_type, &job.id, index);
    let guard = Compare::mod_revision(kv.key.clone(), CompareOp::Equal, kv.mod_revision);
    let op = match output.replay(&record.key).await {
        Ok(Replayed::Written) => {
            tracing::info!(job = %job.id, document = %record.id, "dead letter sent again: written");
            TxnOp::delete(kv.key.clone())
        }
        Ok(Replayed::Missing) => {
            tracing::warn!(job = %job.id, key = %record.key, "dead letter gone from the object store; record removed");
            TxnOp::delete(kv.key.clone())
        }
        Ok(Replayed::Refused(letter)) => {
            tracing::info!(job = %job.id, document = %record.id, reason = %letter.reason, "dead letter refused again");
            match serde_json::to_vec(&record_of(&letter)) {
                Ok(value) => TxnOp::put(kv.key.clone(), value),
                Err(_) => return,
            }
        }
        Err(error) => {
            tracing::warn!(job = %job.id, document = %record.id, %error, "dead letter not sent again");
            let failed = DeadLetterRecord {
                reason: format!("sending it again failed: {error} (refused before: {})", record.reason),
                replay: false,
                ..record
            };
            match serde_json::to_vec(&failed) {
                Ok(value) => TxnOp::put(kv.key.clone(), value),
                Err(_) => return,
            }
        }
    };
    if let Err(error) = ctx.store.txn(Txn::new().when([guard]).and_then([op])).await {
        tracing::warn!(job = %job.id, %error, "dead letter record not updated");
    }
}
