use std::marker::PhantomData;

use serde::{de::DeserializeOwned, Serialize};

use crate::{KeyTuple, StorageError};

/// A value stored in a collection. `FORMAT_VERSION` is written before every encoded value so
/// a later build can tell old layouts apart and migrate them instead of misreading them.
pub trait Record: Serialize + DeserializeOwned {
    const TREE: &'static str;
    const FORMAT_VERSION: u8;
}

/// A typed view over one sled tree: keys are tuples, values are `R`.
pub struct Collection<R: Record> {
    tree: sled::Tree,
    _record: PhantomData<fn() -> R>,
}

impl<R: Record> Clone for Collection<R> {
    fn clone(&self) -> Self {
        Self { tree: self.tree.clone(), _record: PhantomData }
    }
}

impl<R: Record> Collection<R> {
    pub(crate) fn open(db: &sled::Db) -> Result<Self, StorageError> {
        Ok(Self { tree: db.open_tree(R::TREE)?, _record: PhantomData })
    }

    pub fn get(&self, key: &impl KeyTuple) -> Result<Option<R>, StorageError> {
        match self.tree.get(key.encode_key())? {
            Some(bytes) => Ok(Some(decode::<R>(&bytes)?)),
            None => Ok(None),
        }
    }

    pub fn insert(&self, key: &impl KeyTuple, value: &R) -> Result<(), StorageError> {
        self.tree.insert(key.encode_key(), encode(value)?)?;
        Ok(())
    }

    /// Inserts only when the key is absent; returns false when it already existed.
    pub fn insert_new(&self, key: &impl KeyTuple, value: &R) -> Result<bool, StorageError> {
        let swapped = self.tree.compare_and_swap(key.encode_key(), None as Option<&[u8]>, Some(encode(value)?))?;
        Ok(swapped.is_ok())
    }

    /// Writes many records in one atomic sled batch (group commit).
    pub fn insert_batch<K: KeyTuple>(&self, items: &[(K, R)]) -> Result<(), StorageError> {
        let mut batch = sled::Batch::default();
        for (key, value) in items {
            batch.insert(key.encode_key(), encode(value)?);
        }
        self.tree.apply_batch(batch)?;
        Ok(())
    }

    pub fn remove(&self, key: &impl KeyTuple) -> Result<Option<R>, StorageError> {
        match self.tree.remove(key.encode_key())? {
            Some(bytes) => Ok(Some(decode::<R>(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Every record whose key starts with `prefix`, in key order.
    pub fn scan_prefix(&self, prefix: &impl KeyTuple) -> Result<Vec<R>, StorageError> {
        self.tree.scan_prefix(prefix.encode_key()).values().map(|v| decode::<R>(&v?)).collect()
    }

    /// At most `limit` records whose key starts with `prefix`, in key order: reads no more.
    pub fn scan_prefix_limit(&self, prefix: &impl KeyTuple, limit: usize) -> Result<Vec<R>, StorageError> {
        self.tree.scan_prefix(prefix.encode_key()).values().take(limit).map(|v| decode::<R>(&v?)).collect()
    }

    /// At most `limit` records whose key starts with `prefix`, last key first.
    pub fn scan_prefix_rev(&self, prefix: &impl KeyTuple, limit: usize) -> Result<Vec<R>, StorageError> {
        self.tree.scan_prefix(prefix.encode_key()).values().rev().take(limit).map(|v| decode::<R>(&v?)).collect()
    }

    /// How many records have a key starting with `prefix` (keys only: nothing is decoded).
    pub fn count_prefix(&self, prefix: &impl KeyTuple) -> usize {
        self.tree.scan_prefix(prefix.encode_key()).keys().filter(Result::is_ok).count()
    }

    /// A page of records whose key starts with `prefix`, last key first, starting below
    /// `before` (a whole key) when given; at most `limit` that `keep` accepts, reading at most
    /// `max_read` records (a filter that matches little cannot make one page scan everything).
    pub fn page_rev(
        &self,
        prefix: &impl KeyTuple,
        before: Option<&dyn KeyTuple>,
        limit: usize,
        max_read: usize,
        mut keep: impl FnMut(&R) -> bool,
    ) -> Result<Vec<R>, StorageError> {
        let start = prefix.encode_key();
        let end = match before {
            Some(key) => Some(key.encode_key()),
            None => prefix_end(&start),
        };
        let mut out = Vec::new();
        let range = match end {
            Some(end) => self.tree.range(start..end),
            None => self.tree.range(start..),
        };
        for item in range.values().rev().take(max_read) {
            let record = decode::<R>(&item?)?;
            if keep(&record) {
                out.push(record);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Every record that decodes, in key order, deleting those that do not (another format
    /// version, corruption): only for collections whose records can be lost and rebuilt,
    /// such as caches. Returns the records and how many were deleted.
    pub fn all_dropping_undecodable(&self) -> Result<(Vec<R>, usize), StorageError> {
        let mut records = Vec::new();
        let mut dropped = 0;
        for item in self.tree.iter() {
            let (key, value) = item?;
            match decode::<R>(&value) {
                Ok(record) => records.push(record),
                Err(_) => {
                    self.tree.remove(key)?;
                    dropped += 1;
                }
            }
        }
        Ok((records, dropped))
    }

    /// Calls `visit` with every record in key order, one decoded at a time (a scan of a large
    /// collection that keeps few of its records).
    pub fn for_each<E: From<StorageError>>(&self, mut visit: impl FnMut(R) -> Result<(), E>) -> Result<(), E> {
        for value in self.tree.iter().values() {
            visit(decode::<R>(&value.map_err(StorageError::from)?)?)?;
        }
        Ok(())
    }

    /// Calls `visit` with every record whose key starts with `prefix`, one decoded at a time.
    pub fn for_each_prefix<E: From<StorageError>>(
        &self,
        prefix: &impl KeyTuple,
        mut visit: impl FnMut(R) -> Result<(), E>,
    ) -> Result<(), E> {
        for value in self.tree.scan_prefix(prefix.encode_key()).values() {
            visit(decode::<R>(&value.map_err(StorageError::from)?)?)?;
        }
        Ok(())
    }

    /// Every record in the collection, in key order.
    pub fn all(&self) -> Result<Vec<R>, StorageError> {
        self.tree.iter().values().map(|v| decode::<R>(&v?)).collect()
    }

    pub(crate) fn tree(&self) -> &sled::Tree {
        &self.tree
    }

    pub fn len(&self) -> usize {
        self.tree.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }
}

/// The first key after every key that starts with `prefix` (`None`: there is none).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

pub(crate) fn encode<R: Record>(value: &R) -> Result<Vec<u8>, StorageError> {
    let mut out = Vec::with_capacity(128);
    out.push(R::FORMAT_VERSION);
    serde_json::to_writer(&mut out, value)
        .map_err(|e| StorageError::Corrupt { tree: R::TREE.into(), detail: e.to_string() })?;
    Ok(out)
}

pub(crate) fn decode<R: Record>(bytes: &[u8]) -> Result<R, StorageError> {
    let (&version, body) = bytes
        .split_first()
        .ok_or_else(|| StorageError::Corrupt { tree: R::TREE.into(), detail: "empty value".into() })?;
    if version != R::FORMAT_VERSION {
        return Err(StorageError::FormatVersion { tree: R::TREE.into(), found: version, expected: R::FORMAT_VERSION });
    }
    serde_json::from_slice(body).map_err(|e| StorageError::Corrupt { tree: R::TREE.into(), detail: e.to_string() })
}
