//! The metadata database of the embedded store (redb: an embedded, transactional
//! key-value store). Every change is one transaction, so a crash leaves either the state
//! before or the state after, never a half-written row.
//!
//! Tables map a string key to a JSON row: images by name, snapshots by key (a chain ID
//! for unpacked layers, the volume path for views), leases by ID; and one index, the views
//! of each lease.
//!
//! Two kinds of commit (docs/design.md, "Durability"): images and unpacked layers are
//! committed durably (an fsync); leases and views, the records of volumes that live on a
//! tmpfs and go with a reboot anyway, are committed volatile: visible at once to every
//! later transaction, written to disk with the next durable commit or the database's
//! close, and lost if the process dies before either. What a lost or revived record
//! means, and how the store copes, is in that section.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{Error, Result};

/// A table of the database.
#[derive(Clone, Copy, Debug)]
pub enum Table {
    /// Images by name: [`ImageRecord`].
    Images,
    /// Snapshots by key: [`SnapshotRow`].
    Snapshots,
    /// Leases by ID: [`LeaseRow`].
    Leases,
    /// An index: `<lease>\0<view key>` for every view made under a lease, no value. What a
    /// release looks up, without reading every snapshot row.
    LeaseViews,
}

/// The [`Table::LeaseViews`] key of view `key` under `lease`.
pub fn lease_view_key(lease: &str, key: &str) -> String {
    format!("{lease}\0{key}")
}

impl Table {
    fn definition(self) -> TableDefinition<'static, &'static str, &'static [u8]> {
        match self {
            Table::Images => TableDefinition::new("images"),
            Table::Snapshots => TableDefinition::new("snapshots"),
            Table::Leases => TableDefinition::new("leases"),
            Table::LeaseViews => TableDefinition::new("lease_views"),
        }
    }

    const ALL: [Table; 4] = [
        Table::Images,
        Table::Snapshots,
        Table::Leases,
        Table::LeaseViews,
    ];
}

/// What a snapshot is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotKind {
    /// An unpacked layer, keyed by its chain ID; its files are under `snapshots/<hex>/fs`.
    Committed,
    /// A read-only view of a committed snapshot; it has no files of its own.
    View,
}

/// A snapshot row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRow {
    /// Committed or view.
    pub kind: SnapshotKind,
    /// The chain ID of the snapshot below; `None` for a base layer or an empty view.
    pub parent: Option<Digest>,
    /// The lease that keeps a view alive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<String>,
    /// Labels given at creation.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Creation time, seconds since the epoch.
    pub created: u64,
    /// How a layer's files are kept (rows from before EROFS layers have none: a
    /// directory); a view's is the default and means nothing.
    #[serde(default, skip_serializing_if = "LayerFormat::is_directory")]
    pub format: LayerFormat,
}

/// How a committed layer keeps its files (docs/design.md, "Layers as EROFS images").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LayerFormat {
    /// `snapshots/<chain hex>/fs` is a directory of the layer's files.
    #[default]
    Directory,
    /// `snapshots/<chain hex>/layer.erofs` is an EROFS image of them, mounted read-only
    /// at `snapshots/<chain hex>/fs`.
    Erofs,
}

impl LayerFormat {
    fn is_directory(&self) -> bool {
        *self == LayerFormat::Directory
    }
}

/// A lease row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRow {
    /// Creation time, seconds since the epoch.
    pub created: u64,
}

/// Seconds since the epoch, for `created` fields.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The database.
pub struct Db {
    db: redb::Database,
    path: PathBuf,
}

/// A read transaction.
pub struct Reader<'a> {
    txn: redb::ReadTransaction,
    path: &'a Path,
}

/// A write transaction; committed only when the closure given to [`Db::write`] succeeds.
pub struct Writer<'a> {
    txn: redb::WriteTransaction,
    path: &'a Path,
}

fn db_error(path: &Path, err: impl Into<redb::Error>) -> Error {
    match err.into() {
        redb::Error::DatabaseAlreadyOpen => Error::unavailable(format!(
            "database {} is in use by another process (is `imv serve` running on this root? \
             use `imv --socket ...` to talk to it)",
            path.display()
        )),
        e => Error::internal(format!("database {}: {e}", path.display())),
    }
}

fn decode<T: DeserializeOwned>(path: &Path, table: Table, key: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| {
        Error::internal(format!(
            "database {}: {table:?} row {key:?} is corrupt: {e}",
            path.display()
        ))
    })
}

impl Db {
    /// Open or create the database at `path`, with all tables present.
    pub fn open(path: &Path) -> Result<Self> {
        let db = redb::Database::create(path).map_err(|e| db_error(path, e))?;
        Self::with_tables(db, path)
    }

    /// [`open`](Self::open), or `None` when another process (or another open in this one)
    /// has the database: the caller decides whether to wait.
    pub fn try_open(path: &Path) -> Result<Option<Self>> {
        match redb::Database::create(path) {
            Ok(db) => Self::with_tables(db, path).map(Some),
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => Ok(None),
            Err(e) => Err(db_error(path, e)),
        }
    }

    fn with_tables(db: redb::Database, path: &Path) -> Result<Self> {
        let this = Db {
            db,
            path: path.to_owned(),
        };
        // The index is rebuilt from the rows at every open: a database written before it
        // existed gets it, and it never disagrees with the rows it indexes.
        this.write(|w| {
            for table in Table::ALL {
                w.txn
                    .open_table(table.definition())
                    .map_err(|e| db_error(w.path, e))?;
            }
            w.txn
                .delete_table(Table::LeaseViews.definition())
                .map_err(|e| db_error(w.path, e))?;
            let views: Vec<(String, String)> = w
                .list::<SnapshotRow>(Table::Snapshots)?
                .into_iter()
                .filter_map(|(key, row)| Some((row.lease?, key)))
                .collect();
            let mut index = w.open(Table::LeaseViews)?;
            for (lease, key) in views {
                index
                    .insert(lease_view_key(&lease, &key).as_str(), &[][..])
                    .map_err(|e| db_error(w.path, e))?;
            }
            Ok(())
        })?;
        Ok(this)
    }

    /// Run `f` in a read transaction (a consistent snapshot of the database).
    pub fn read<T>(&self, f: impl FnOnce(&Reader<'_>) -> Result<T>) -> Result<T> {
        let txn = self.db.begin_read().map_err(|e| db_error(&self.path, e))?;
        f(&Reader {
            txn,
            path: &self.path,
        })
    }

    /// Run `f` in a write transaction: committed durably if `f` succeeds, rolled back if it
    /// fails. Write transactions are serialized.
    pub fn write<T>(&self, f: impl FnOnce(&mut Writer<'_>) -> Result<T>) -> Result<T> {
        self.write_with(redb::Durability::Immediate, f)
    }

    /// [`write`](Self::write), committed volatile (see the module's comment): for the
    /// records of volumes only (leases and views).
    pub fn write_volatile<T>(&self, f: impl FnOnce(&mut Writer<'_>) -> Result<T>) -> Result<T> {
        self.write_with(redb::Durability::None, f)
    }

    fn write_with<T>(
        &self,
        durability: redb::Durability,
        f: impl FnOnce(&mut Writer<'_>) -> Result<T>,
    ) -> Result<T> {
        let mut txn = self.db.begin_write().map_err(|e| db_error(&self.path, e))?;
        txn.set_durability(durability)
            .map_err(|e| Error::internal(format!("database {}: {e}", self.path.display())))?;
        let mut writer = Writer {
            txn,
            path: &self.path,
        };
        match f(&mut writer) {
            Ok(value) => {
                writer.txn.commit().map_err(|e| db_error(&self.path, e))?;
                Ok(value)
            }
            Err(e) => {
                // Dropping would abort too; aborting explicitly surfaces nothing new, so
                // its own error (if any) is not worth more than the one we return.
                let _ = writer.txn.abort();
                Err(e)
            }
        }
    }
}

type Bytes = &'static [u8];

/// `get` on an open table, read or write.
fn get_row<T: DeserializeOwned>(
    path: &Path,
    table: Table,
    open: &impl ReadableTable<&'static str, Bytes>,
    key: &str,
) -> Result<Option<T>> {
    match open.get(key).map_err(|e| db_error(path, e))? {
        Some(v) => Ok(Some(decode(path, table, key, v.value())?)),
        None => Ok(None),
    }
}

/// `list` on an open table, read or write.
fn list_rows<T: DeserializeOwned>(
    path: &Path,
    table: Table,
    open: &impl ReadableTable<&'static str, Bytes>,
) -> Result<Vec<(String, T)>> {
    let mut out = Vec::new();
    for item in open.iter().map_err(|e| db_error(path, e))? {
        let (k, v) = item.map_err(|e| db_error(path, e))?;
        let key = k.value().to_owned();
        let row = decode(path, table, &key, v.value())?;
        out.push((key, row));
    }
    Ok(out)
}

/// `keys_after` on an open table, read or write.
fn keys_after(
    path: &Path,
    open: &impl ReadableTable<&'static str, Bytes>,
    prefix: &str,
) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for item in open.range(prefix..).map_err(|e| db_error(path, e))? {
        let (k, _) = item.map_err(|e| db_error(path, e))?;
        match k.value().strip_prefix(prefix) {
            Some(rest) => out.push(rest.to_owned()),
            None => break,
        }
    }
    Ok(out)
}

impl Reader<'_> {
    fn open(&self, table: Table) -> Result<redb::ReadOnlyTable<&'static str, Bytes>> {
        self.txn
            .open_table(table.definition())
            .map_err(|e| db_error(self.path, e))
    }

    /// The row `key` of `table`, if any.
    pub fn get<T: DeserializeOwned>(&self, table: Table, key: &str) -> Result<Option<T>> {
        get_row(self.path, table, &self.open(table)?, key)
    }

    /// Every row of `table`, sorted by key.
    pub fn list<T: DeserializeOwned>(&self, table: Table) -> Result<Vec<(String, T)>> {
        list_rows(self.path, table, &self.open(table)?)
    }

    /// The keys of index `table` that start with `prefix`, the prefix cut off, sorted.
    pub fn keys_after(&self, table: Table, prefix: &str) -> Result<Vec<String>> {
        keys_after(self.path, &self.open(table)?, prefix)
    }
}

impl Writer<'_> {
    fn open(&self, table: Table) -> Result<redb::Table<'_, &'static str, Bytes>> {
        self.txn
            .open_table(table.definition())
            .map_err(|e| db_error(self.path, e))
    }

    /// The row `key` of `table`, if any, as this transaction sees it.
    pub fn get<T: DeserializeOwned>(&self, table: Table, key: &str) -> Result<Option<T>> {
        get_row(self.path, table, &self.open(table)?, key)
    }

    /// Every row of `table`, sorted by key, as this transaction sees it.
    pub fn list<T: DeserializeOwned>(&self, table: Table) -> Result<Vec<(String, T)>> {
        list_rows(self.path, table, &self.open(table)?)
    }

    /// Insert or replace row `key` of `table`.
    pub fn put<T: Serialize>(&mut self, table: Table, key: &str, row: &T) -> Result<()> {
        let bytes = serde_json::to_vec(row)
            .map_err(|e| Error::internal(format!("encoding {table:?} row {key:?}: {e}")))?;
        let mut t = self.open(table)?;
        t.insert(key, bytes.as_slice())
            .map_err(|e| db_error(self.path, e))?;
        Ok(())
    }

    /// The keys of index `table` that start with `prefix`, as this transaction sees them.
    pub fn keys_after(&self, table: Table, prefix: &str) -> Result<Vec<String>> {
        keys_after(self.path, &self.open(table)?, prefix)
    }

    /// Add `key` to index `table`.
    pub fn index(&mut self, table: Table, key: &str) -> Result<()> {
        self.open(table)?
            .insert(key, &[][..])
            .map_err(|e| db_error(self.path, e))?;
        Ok(())
    }

    /// Delete row `key` of `table`; whether it was there.
    pub fn delete(&mut self, table: Table, key: &str) -> Result<bool> {
        let mut t = self.open(table)?;
        let existed = t.remove(key).map_err(|e| db_error(self.path, e))?.is_some();
        Ok(existed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_write_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("meta.redb")).unwrap();
        let row = LeaseRow { created: 1 };
        let err = db
            .write(|w| {
                w.put(Table::Leases, "a", &row)?;
                Err::<(), _>(Error::invalid("stop"))
            })
            .unwrap_err();
        assert_eq!(err.message(), "stop");
        assert_eq!(
            db.read(|r| r.get::<LeaseRow>(Table::Leases, "a")).unwrap(),
            None
        );
        db.write(|w| w.put(Table::Leases, "a", &row)).unwrap();
        assert_eq!(
            db.read(|r| r.get::<LeaseRow>(Table::Leases, "a")).unwrap(),
            Some(row)
        );
    }

    #[test]
    fn second_open_is_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.redb");
        let _db = Db::open(&path).unwrap();
        let err = Db::open(&path).err().expect("second open succeeded");
        assert_eq!(err.kind(), crate::ErrorKind::Unavailable, "{err}");
    }
}
