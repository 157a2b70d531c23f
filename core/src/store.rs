//! The pipeline's durable state: one embedded ACID store (redb) per `data_dir`, shared by all
//! components. Each component gets its own key namespace: file checkpoints, pull cursors,
//! correlation state. Every write is a committed, fsynced transaction.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use redb::{Database, ReadableDatabase, TableDefinition};

const STATE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("state");

/// redb's page cache. Its default (1 GiB) would dominate the process' memory once the
/// correlation state grows; reads of our state are rare (start-up, API), so a small cache costs
/// little.
const STORE_CACHE_BYTES: usize = 32 << 20;

/// A key and its value, as stored.
pub type Entry = (Vec<u8>, Vec<u8>);

#[derive(Debug)]
pub struct StoreError(pub String);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "state store: {}", self.0)
    }
}
impl std::error::Error for StoreError {}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

/// Opens the database file lazily, on first use, so pipelines without state never create
/// `data_dir`.
#[derive(Clone)]
pub struct StateStore {
    path: PathBuf,
    db: Arc<OnceLock<Arc<Database>>>,
}

impl StateStore {
    pub fn new(data_dir: &Path) -> Self {
        StateStore {
            path: data_dir.join("state.redb"),
            db: Arc::new(OnceLock::new()),
        }
    }

    fn db(&self) -> Result<Arc<Database>, StoreError> {
        if let Some(db) = self.db.get() {
            return Ok(Arc::clone(db));
        }
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError(format!("cannot create {}: {e}", dir.display())))?;
        }
        let db = Database::builder()
            .set_cache_size(STORE_CACHE_BYTES)
            .create(&self.path)
            .map_err(|e| StoreError(format!("cannot open {}: {e}", self.path.display())))?;
        let db = Arc::new(db);
        let _ = self.db.set(Arc::clone(&db));
        Ok(self.db.get().cloned().unwrap_or(db))
    }

    /// A namespace, usually `"<component type>/<component name>"`.
    pub fn namespace(&self, name: &str) -> Namespace {
        let mut prefix = name.as_bytes().to_vec();
        prefix.push(0);
        Namespace {
            store: self.clone(),
            prefix,
        }
    }
}

#[derive(Clone)]
pub struct Namespace {
    store: StateStore,
    prefix: Vec<u8>,
}

impl Namespace {
    fn key(&self, key: &[u8]) -> Vec<u8> {
        let mut k = self.prefix.clone();
        k.extend_from_slice(key);
        k
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let db = self.store.db()?;
        let txn = db.begin_read().map_err(err)?;
        let table = match txn.open_table(STATE) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(err(e)),
        };
        Ok(table
            .get(self.key(key).as_slice())
            .map_err(err)?
            .map(|v| v.value().to_vec()))
    }

    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.write(&[(key, Some(value))])
    }

    /// Applies all changes in one durable transaction (`None` deletes the key).
    pub fn write(&self, changes: &[(&[u8], Option<&[u8]>)]) -> Result<(), StoreError> {
        let db = self.store.db()?;
        let txn = db.begin_write().map_err(err)?;
        {
            let mut table = txn.open_table(STATE).map_err(err)?;
            for (k, v) in changes {
                let key = self.key(k);
                match v {
                    Some(v) => {
                        table.insert(key.as_slice(), *v).map_err(err)?;
                    }
                    None => {
                        table.remove(key.as_slice()).map_err(err)?;
                    }
                }
            }
        }
        txn.commit().map_err(err)
    }

    /// Calls `f` with every (key, value) of the namespace in key order, keys without the
    /// namespace prefix, without collecting them (a large state would be held twice).
    pub fn scan_each(&self, mut f: impl FnMut(&[u8], &[u8])) -> Result<(), StoreError> {
        let db = self.store.db()?;
        let txn = db.begin_read().map_err(err)?;
        let table = match txn.open_table(STATE) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
            Err(e) => return Err(err(e)),
        };
        for item in table.range(self.prefix.as_slice()..).map_err(err)? {
            let (k, v) = item.map_err(err)?;
            let k = k.value();
            if !k.starts_with(&self.prefix) {
                break;
            }
            f(&k[self.prefix.len()..], v.value());
        }
        Ok(())
    }

    /// Every (key, value) of the namespace, keys without the namespace prefix.
    pub fn scan(&self) -> Result<Vec<Entry>, StoreError> {
        let db = self.store.db()?;
        let txn = db.begin_read().map_err(err)?;
        let table = match txn.open_table(STATE) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(err(e)),
        };
        let mut out = Vec::new();
        for item in table.range(self.prefix.as_slice()..).map_err(err)? {
            let (k, v) = item.map_err(err)?;
            let k = k.value();
            if !k.starts_with(&self.prefix) {
                break;
            }
            out.push((k[self.prefix.len()..].to_vec(), v.value().to_vec()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_isolated_and_durable() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = StateStore::new(dir.path());
            let a = store.namespace("file/a");
            let b = store.namespace("file/b");
            a.put(b"k", b"1").unwrap();
            b.put(b"k", b"2").unwrap();
            a.write(&[(b"x", Some(b"3")), (b"k", None)]).unwrap();
        }
        let store = StateStore::new(dir.path());
        let a = store.namespace("file/a");
        assert_eq!(a.get(b"k").unwrap(), None);
        assert_eq!(a.scan().unwrap(), vec![(b"x".to_vec(), b"3".to_vec())]);
        assert_eq!(
            store.namespace("file/b").get(b"k").unwrap(),
            Some(b"2".to_vec())
        );
    }
}
