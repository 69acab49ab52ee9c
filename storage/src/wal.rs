//! The ledger's write-ahead log: settled charges and credits are appended here before the
//! client is answered, and applied to sled in batches afterwards.
//!
//! An append is one `write` into the OS page cache, so a record survives the process being
//! killed the moment the call returns; `fdatasync` (power-loss durability) happens once per
//! group-commit batch. The log is a series of segment files (`<seq>.wal`): the writer moves
//! to a new segment every second or so, and a segment is deleted once its events are in sled
//! and sled is flushed. At start, whatever segments remain are replayed (applying is idempotent).
//!
//! Record format: `len: u32 LE | crc32(payload): u32 LE | payload (JSON LedgerEvent)`. A torn
//! last record (the process died mid-write) fails its length or checksum and ends the replay:
//! its writer never got an answer, so no client was told it was recorded.

use std::{
    fs::{self, File, OpenOptions},
    io::{Read, Write},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use crate::{ledger::LedgerEvent, StorageError};

/// Segments an earlier process left behind, oldest first, with their events.
pub type Leftovers = Vec<(SealedSegment, Vec<LedgerEvent>)>;

pub struct Wal {
    dir: PathBuf,
    current: Arc<File>,
    current_path: PathBuf,
    next_seq: u64,
    bytes_in_segment: u64,
    opened_at: Instant,
    /// Test-only fault: this many next appends fail as a full disk would, half-written.
    failing_appends: u32,
    /// A failed append's partial record could not be cut off: no more appends here.
    torn: bool,
}

/// A segment the writer has moved past, waiting to be applied and removed.
pub struct SealedSegment {
    file: Arc<File>,
    path: PathBuf,
}

/// Lets another thread fsync the segment being written without stopping the writer.
#[derive(Clone)]
pub struct SyncHandle {
    file: Arc<File>,
    path: PathBuf,
}

impl SyncHandle {
    pub fn sync(&self) -> Result<(), StorageError> {
        self.file.sync_data().map_err(io(&self.path))
    }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> StorageError + '_ {
    move |source| StorageError::Io { path: path.display().to_string(), source }
}

fn segment_paths(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StorageError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        let seq = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".wal"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(seq) = seq {
            out.push((seq, path));
        }
    }
    out.sort();
    Ok(out)
}

impl Wal {
    /// Opens the log directory. Returns the log, positioned on a fresh segment, and the
    /// segments an earlier process left behind (oldest first) with their events.
    pub fn open(dir: &Path) -> Result<(Self, Leftovers), StorageError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let mut leftovers = Vec::new();
        let mut next_seq = 1;
        for (seq, path) in segment_paths(dir)? {
            let events = read_segment(&path)?;
            let file = Arc::new(OpenOptions::new().read(true).open(&path).map_err(io(&path))?);
            leftovers.push((SealedSegment { file, path }, events));
            next_seq = seq + 1;
        }
        let (current, current_path) = create_segment(dir, next_seq)?;
        let wal = Self {
            dir: dir.to_path_buf(),
            current: Arc::new(current),
            current_path,
            next_seq: next_seq + 1,
            bytes_in_segment: 0,
            opened_at: Instant::now(),
            failing_appends: 0,
            torn: false,
        };
        Ok((wal, leftovers))
    }

    /// Appends one event. When this returns, a crash of the process cannot lose it.
    pub fn append(&mut self, event: &LedgerEvent) -> Result<(), StorageError> {
        if self.torn {
            return Err(StorageError::Io {
                path: self.current_path.display().to_string(),
                source: std::io::Error::other("the segment ends in a torn record that could not be cut off"),
            });
        }
        let payload = serde_json::to_vec(event)
            .map_err(|e| StorageError::Corrupt { tree: "ledger-wal".into(), detail: e.to_string() })?;
        let mut record = Vec::with_capacity(payload.len() + 8);
        record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        record.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        record.extend_from_slice(&payload);
        // One write call per record: a record is either wholly in the file or detectably torn.
        let written = if self.failing_appends > 0 {
            self.failing_appends -= 1;
            // A full disk mid-record: part of it lands.
            let _ = (&*self.current).write_all(&record[..record.len() / 2]);
            Err(std::io::Error::other("injected fault: no space left on device"))
        } else {
            (&*self.current).write_all(&record)
        };
        if let Err(error) = written {
            // Cut off whatever part landed: replay stops at the first bad record, so one
            // left here would hide every record appended after it. If it cannot be cut,
            // nothing more goes into this segment.
            if self.current.set_len(self.bytes_in_segment).is_err() {
                self.torn = true;
            }
            return Err(io(&self.current_path)(error));
        }
        self.bytes_in_segment += record.len() as u64;
        Ok(())
    }

    /// Test-only (fault injection): the next `n` appends fail, half-written.
    pub fn fail_next_appends(&mut self, n: u32) {
        self.failing_appends = n;
    }

    /// Makes everything appended so far durable against power loss.
    pub fn sync(&self) -> Result<(), StorageError> {
        self.current.sync_data().map_err(io(&self.current_path))
    }

    pub fn is_current_empty(&self) -> bool {
        self.bytes_in_segment == 0
    }

    /// How long the current segment has been written to, and how big it is.
    pub fn current_age_and_size(&self) -> (Duration, u64) {
        (self.opened_at.elapsed(), self.bytes_in_segment)
    }

    pub fn sync_handle(&self) -> SyncHandle {
        SyncHandle { file: self.current.clone(), path: self.current_path.clone() }
    }

    /// Starts a new segment and hands back the previous one.
    pub fn rotate(&mut self) -> Result<SealedSegment, StorageError> {
        let (file, path) = create_segment(&self.dir, self.next_seq)?;
        self.next_seq += 1;
        self.bytes_in_segment = 0;
        self.torn = false;
        self.opened_at = Instant::now();
        let old_file = std::mem::replace(&mut self.current, Arc::new(file));
        let old_path = std::mem::replace(&mut self.current_path, path);
        Ok(SealedSegment { file: old_file, path: old_path })
    }
}

impl SealedSegment {
    pub fn sync(&self) -> Result<(), StorageError> {
        self.file.sync_data().map_err(io(&self.path))
    }

    /// Deletes the segment; call only once its events are durable in sled.
    pub fn remove(self) -> Result<(), StorageError> {
        fs::remove_file(&self.path).map_err(io(&self.path))
    }
}

fn create_segment(dir: &Path, seq: u64) -> Result<(File, PathBuf), StorageError> {
    let path = dir.join(format!("{seq:020}.wal"));
    let file = OpenOptions::new().create(true).append(true).open(&path).map_err(io(&path))?;
    // The new name must survive a crash too, or its records would be unreachable.
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
    Ok((file, path))
}

fn read_segment(path: &Path) -> Result<Vec<LedgerEvent>, StorageError> {
    let mut bytes = Vec::new();
    File::open(path).and_then(|mut f| f.read_to_end(&mut bytes)).map_err(io(path))?;
    let mut events = Vec::new();
    let mut rest = bytes.as_slice();
    while rest.len() >= 8 {
        let len = u32::from_le_bytes(rest[0..4].try_into().unwrap_or_default()) as usize;
        let crc = u32::from_le_bytes(rest[4..8].try_into().unwrap_or_default());
        let Some(payload) = rest.get(8..8 + len) else { break };
        if crc32fast::hash(payload) != crc {
            break;
        }
        let event = serde_json::from_slice(payload)
            .map_err(|e| StorageError::Corrupt { tree: "ledger-wal".into(), detail: e.to_string() })?;
        events.push(event);
        rest = &rest[8 + len..];
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::Credit;

    fn credit(id: &str) -> LedgerEvent {
        LedgerEvent::Credit(Credit {
            id: id.into(),
            account_id: "a".into(),
            amount_units: 5,
            source: "manual".into(),
            reference: None,
            note: None,
            created_at_us: 1,
        })
    }

    fn ids(events: &[LedgerEvent]) -> Vec<String> {
        events
            .iter()
            .map(|e| match e {
                LedgerEvent::Credit(c) => c.id.clone(),
                LedgerEvent::Usage(u) => u.id.clone(),
            })
            .collect()
    }

    #[test]
    fn appended_events_are_replayed_in_order_and_a_torn_tail_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut wal, leftovers) = Wal::open(dir.path()).unwrap();
            assert!(leftovers.is_empty());
            wal.append(&credit("1")).unwrap();
            let _sealed = wal.rotate().unwrap();
            wal.append(&credit("2")).unwrap();
            wal.append(&credit("3")).unwrap();
            // A crash mid-write leaves a partial record behind.
            (&*wal.current).write_all(&[200, 0, 0, 0, 1, 2]).unwrap();
        }
        let (_wal, leftovers) = Wal::open(dir.path()).unwrap();
        let replayed: Vec<String> = leftovers.iter().flat_map(|(_, e)| ids(e)).collect();
        assert_eq!(replayed, ["1", "2", "3"]);
    }

    /// An append that fails part-way (a full disk) is cut off, so records appended after it
    /// are still replayed.
    #[test]
    fn a_failed_append_leaves_no_torn_record_to_hide_the_next_ones() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut wal, _) = Wal::open(dir.path()).unwrap();
            wal.append(&credit("1")).unwrap();
            wal.fail_next_appends(1);
            assert!(wal.append(&credit("lost")).is_err());
            wal.append(&credit("3")).unwrap();
        }
        let (_wal, leftovers) = Wal::open(dir.path()).unwrap();
        let replayed: Vec<String> = leftovers.iter().flat_map(|(_, e)| ids(e)).collect();
        assert_eq!(replayed, ["1", "3"]);
    }

    #[test]
    fn removed_segments_are_not_replayed() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut wal, _) = Wal::open(dir.path()).unwrap();
            wal.append(&credit("1")).unwrap();
            let sealed = wal.rotate().unwrap();
            sealed.sync().unwrap();
            sealed.remove().unwrap();
            wal.append(&credit("2")).unwrap();
        }
        let (_wal, leftovers) = Wal::open(dir.path()).unwrap();
        let replayed: Vec<String> = leftovers.iter().flat_map(|(_, e)| ids(e)).collect();
        assert_eq!(replayed, ["2"]);
    }
}
