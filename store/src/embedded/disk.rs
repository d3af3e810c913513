//! The embedded store's on-disk form: one redb file holding every key with
//! its MVCC metadata, and the current revision. History and leases are not
//! persisted (see the parent module's doc).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use crate::{KeyValue, Revision, StoreError};

/// key → create_revision, mod_revision, version, lease (i64 LE each), value.
const KVS: TableDefinition<&str, &[u8]> = TableDefinition::new("kvs");
/// "revision" → the store revision.
const META: TableDefinition<&str, i64> = TableDefinition::new("meta");
const REVISION: &str = "revision";
const HEADER: usize = 32;

pub(super) const FILE_NAME: &str = "store.redb";

fn disk_error(error: impl Into<redb::Error>) -> StoreError {
    StoreError::Other(format!("embedded store disk: {}", error.into()))
}

/// The open redb file.
pub(super) struct Disk {
    db: Database,
    /// Whether each commit is fsynced before returning (see `EmbeddedOptions::fsync`).
    fsync: bool,
    /// A non-durable commit has not been followed by a durable one yet.
    dirty: bool,
}

/// What a write changes: `Some` is an upsert, `None` a delete.
pub(super) type Changes<'a> = &'a BTreeMap<String, Option<KeyValue>>;

impl Disk {
    /// Opens (or creates) `<dir>/store.redb`. Retries briefly when the file
    /// is still held by a store of this process that is being dropped.
    pub(super) fn open(dir: &Path, fsync: bool) -> Result<Self, StoreError> {
        create_private_dir(dir)
            .map_err(|e| StoreError::Other(format!("create data directory {}: {e}", dir.display())))?;
        let path = dir.join(FILE_NAME);
        let deadline = Instant::now() + Duration::from_secs(2);
        let db = loop {
            match Database::create(&path) {
                Ok(db) => break db,
                Err(redb::DatabaseError::DatabaseAlreadyOpen) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(disk_error(e)),
            }
        };
        // The file holds job secrets: readable by its owner only.
        restrict_to_owner(&path, 0o600)
            .map_err(|e| StoreError::Other(format!("make {} private: {e}", path.display())))?;
        // Create the tables so that reads never meet a missing table.
        let txn = db.begin_write().map_err(disk_error)?;
        txn.open_table(KVS).map_err(disk_error)?;
        txn.open_table(META).map_err(disk_error)?;
        txn.commit().map_err(disk_error)?;
        Ok(Self { db, fsync, dirty: false })
    }

    /// Every key and the revision.
    pub(super) fn load(&self) -> Result<(BTreeMap<String, KeyValue>, Revision), StoreError> {
        let txn = self.db.begin_read().map_err(disk_error)?;
        let meta = txn.open_table(META).map_err(disk_error)?;
        let revision = meta.get(REVISION).map_err(disk_error)?.map(|v| v.value()).unwrap_or(0);
        let table = txn.open_table(KVS).map_err(disk_error)?;
        let mut kvs = BTreeMap::new();
        for entry in table.iter().map_err(disk_error)? {
            let (key, value) = entry.map_err(disk_error)?;
            let kv = decode(key.value(), value.value())?;
            kvs.insert(kv.key.clone(), kv);
        }
        Ok((kvs, revision))
    }

    /// Writes `changes` and the new revision in one redb transaction.
    pub(super) fn commit(&mut self, changes: Changes<'_>, revision: Revision) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write().map_err(disk_error)?;
        if !self.fsync {
            txn.set_durability(Durability::None).map_err(disk_error)?;
        }
        {
            let mut table = txn.open_table(KVS).map_err(disk_error)?;
            let mut buf = Vec::new();
            for (key, change) in changes {
                match change {
                    Some(kv) => {
                        encode(kv, &mut buf);
                        table.insert(key.as_str(), buf.as_slice()).map_err(disk_error)?;
                    }
                    None => {
                        table.remove(key.as_str()).map_err(disk_error)?;
                    }
                }
            }
            let mut meta = txn.open_table(META).map_err(disk_error)?;
            meta.insert(REVISION, revision).map_err(disk_error)?;
        }
        txn.commit().map_err(disk_error)?;
        self.dirty = !self.fsync;
        Ok(())
    }

    /// Makes earlier non-durable commits durable (an empty durable commit).
    pub(super) fn flush(&mut self) -> Result<(), StoreError> {
        if !self.dirty {
            return Ok(());
        }
        let txn = self.db.begin_write().map_err(disk_error)?;
        txn.commit().map_err(disk_error)?;
        self.dirty = false;
        Ok(())
    }
}

fn encode(kv: &KeyValue, buf: &mut Vec<u8>) {
    buf.clear();
    for n in [kv.create_revision, kv.mod_revision, kv.version, kv.lease] {
        buf.extend_from_slice(&n.to_le_bytes());
    }
    buf.extend_from_slice(&kv.value);
}

fn decode(key: &str, bytes: &[u8]) -> Result<KeyValue, StoreError> {
    if bytes.len() < HEADER {
        return Err(StoreError::Other(format!("embedded store disk: record of {key:?} is truncated")));
    }
    let field = |i: usize| {
        let mut n = [0u8; 8];
        n.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
        i64::from_le_bytes(n)
    };
    Ok(KeyValue {
        key: key.to_string(),
        value: bytes[HEADER..].to_vec(),
        create_revision: field(0),
        mod_revision: field(1),
        version: field(2),
        lease: field(3),
    })
}

/// Creates `dir` (and missing parents) readable by its owner only; a
/// directory that already exists keeps its mode.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

#[cfg(unix)]
fn restrict_to_owner(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn restrict_to_owner(_path: &Path, _mode: u32) -> std::io::Result<()> {
    Ok(())
}
