//! Generated media the gateway serves itself (images asked for as `url`): the bytes in
//! `<data_dir>/media/<id>`, a [`MediaFile`] record beside them, both gone once expired.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{Record, StorageError, Store};

/// Key: (id). `id` is 32 hex characters (a random UUID): the URL is the capability.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MediaFile {
    pub id: String,
    pub account_id: String,
    pub mime: String,
    pub bytes: u64,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
}
impl Record for MediaFile {
    const TREE: &'static str = "media_files";
    const FORMAT_VERSION: u8 = 1;
}

/// Key: (account_id, id). An asynchronous video generation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VideoJob {
    pub id: String,
    pub account_id: String,
    pub workspace: Option<String>,
    pub api_key_id: String,
    pub request_id: Option<String>,
    pub mode: String,
    pub requested_model: String,
    pub model: String,
    /// The upstream's name (`provider:google:managed`) and the provider's id for the job.
    pub upstream: String,
    pub provider: String,
    pub billing_mode: String,
    pub execution_source: String,
    pub provider_job: String,
    pub prompt: String,
    pub duration_secs: u32,
    pub aspect_ratio: String,
    pub resolution: String,
    pub usd_per_second: f64,
    /// `processing`, `charging` (the video is kept; its charge maybe not recorded),
    /// `completed`, `failed`.
    pub status: String,
    /// The kept video's media id, once fetched.
    pub media_id: Option<String>,
    pub error: Option<String>,
    pub polls: u32,
    pub next_poll_at_ms: i64,
    pub created_at_ms: i64,
    pub completed_at_ms: Option<i64>,
    pub charged_usd: Option<f64>,
}
impl Record for VideoJob {
    const TREE: &'static str = "video_jobs";
    const FORMAT_VERSION: u8 = 1;
}

/// Key: (id). A video job still to finish: the `videojobs` supervisor starts its actor.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OpenVideoJob {
    pub account_id: String,
    pub id: String,
}
impl Record for OpenVideoJob {
    const TREE: &'static str = "video_jobs_open";
    const FORMAT_VERSION: u8 = 1;
}

fn valid_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Store {
    fn media_dir(&self) -> PathBuf {
        self.data_dir().join("media")
    }

    /// Writes the bytes whole (a temporary file renamed into place), then the record.
    pub fn put_media(&self, file: &MediaFile, bytes: &[u8]) -> Result<(), StorageError> {
        let mut upload = self.begin_media(&file.id)?;
        upload.write(bytes)?;
        self.commit_media(upload, file)
    }

    /// Starts writing media `id` piece by piece, to a staged file that only
    /// [`Store::commit_media`] puts in place: a download never sits whole in memory, and
    /// one that fails half-way leaves nothing behind.
    pub fn begin_media(&self, id: &str) -> Result<MediaUpload, StorageError> {
        if !valid_id(id) {
            return Err(StorageError::Invalid(format!("media id {id:?} is not 32 hex characters")));
        }
        let dir = self.media_dir();
        std::fs::create_dir_all(&dir).map_err(|source| StorageError::Io { path: dir.display().to_string(), source })?;
        let staged = dir.join(format!(".{id}.tmp"));
        let file = std::fs::File::create(&staged)
            .map_err(|source| StorageError::Io { path: staged.display().to_string(), source })?;
        Ok(MediaUpload { id: id.to_owned(), staged, file: Some(file), written: 0, committed: false })
    }

    /// Puts an upload's file in place (synced, then renamed), then its record.
    pub fn commit_media(&self, mut upload: MediaUpload, file: &MediaFile) -> Result<(), StorageError> {
        if file.id != upload.id {
            return Err(StorageError::Invalid(format!("media {} committed as {}", upload.id, file.id)));
        }
        let io = |source| StorageError::Io { path: upload.staged.display().to_string(), source };
        if let Some(f) = upload.file.take() {
            f.sync_all().map_err(io)?;
        }
        let placed = self.media_dir().join(&file.id);
        std::fs::rename(&upload.staged, &placed).map_err(io)?;
        if let Err(error) =
            self.media_files.insert(&file.id.as_str(), &MediaFile { bytes: upload.written, ..file.clone() })
        {
            // No record, no file: nothing would ever sweep it.
            let _ = std::fs::remove_file(&placed);
            return Err(error);
        }
        upload.committed = true;
        Ok(())
    }

    /// A file that has not expired, with its bytes.
    pub fn get_media(&self, id: &str, now_ms: i64) -> Result<Option<(MediaFile, Vec<u8>)>, StorageError> {
        let Some((file, path)) = self.media_path(id, now_ms)? else { return Ok(None) };
        match std::fs::read(path) {
            Ok(bytes) => Ok(Some((file, bytes))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StorageError::Io { path: self.media_dir().display().to_string(), source }),
        }
    }

    /// Where a file that has not expired is, for serving it without reading it whole (it
    /// may be swept any time after it expires: opening it can still find nothing).
    pub fn media_path(&self, id: &str, now_ms: i64) -> Result<Option<(MediaFile, PathBuf)>, StorageError> {
        if !valid_id(id) {
            return Ok(None);
        }
        let Some(file) = self.media_files.get(&id)?.filter(|f| f.expires_at_ms > now_ms) else { return Ok(None) };
        Ok(Some((file, self.media_dir().join(id))))
    }

    /// Removes expired files and their records, and what a crash left behind (staged
    /// uploads, files without a record) once older than [`MEDIA_LEFTOVER_AGE_MS`]; returns
    /// how many records expired.
    pub fn sweep_media(&self, now_ms: i64) -> Result<usize, StorageError> {
        self.sweep_media_leftovers(now_ms)?;
        let mut expired = Vec::new();
        self.media_files.for_each(|f: MediaFile| {
            if f.expires_at_ms <= now_ms {
                expired.push(f.id);
            }
            Ok::<_, StorageError>(())
        })?;
        for id in &expired {
            // A record whose id is not a file name names no file of ours.
            let file = if valid_id(id) { std::fs::remove_file(self.media_dir().join(id)) } else { Ok(()) };
            match file {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(StorageError::Io { path: self.media_dir().display().to_string(), source }),
            }
            self.media_files.remove(&id.as_str())?;
        }
        Ok(expired.len())
    }
}

/// How old a staged upload or a file without a record must be before the sweep removes it:
/// older than any download still being written.
pub const MEDIA_LEFTOVER_AGE_MS: i64 = 6 * 60 * 60 * 1000;

impl Store {
    fn sweep_media_leftovers(&self, now_ms: i64) -> Result<(), StorageError> {
        let dir = self.media_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => return Err(StorageError::Io { path: dir.display().to_string(), source }),
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let staged = name.strip_prefix('.').and_then(|n| n.strip_suffix(".tmp")).is_some_and(valid_id);
            let orphan = valid_id(&name) && self.media_files.get(&name.as_str())?.is_none();
            let modified_ms = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
            if (staged || orphan) && now_ms - modified_ms > MEDIA_LEFTOVER_AGE_MS {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(())
    }
}

/// A media file being written ([`Store::begin_media`]); dropped uncommitted, its staged
/// file is removed.
#[derive(Debug)]
pub struct MediaUpload {
    id: String,
    staged: PathBuf,
    file: Option<std::fs::File>,
    written: u64,
    committed: bool,
}

impl MediaUpload {
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), StorageError> {
        use std::io::Write as _;
        let file = self.file.as_mut().ok_or_else(|| StorageError::Invalid("a committed upload".into()))?;
        file.write_all(bytes).map_err(|source| StorageError::Io { path: self.staged.display().to_string(), source })?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// How many bytes were written.
    pub fn len(&self) -> u64 {
        self.written
    }

    pub fn is_empty(&self) -> bool {
        self.written == 0
    }
}

impl Drop for MediaUpload {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.staged);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::MediaFile;
    use crate::Store;

    #[test]
    fn media_is_served_until_it_expires_then_swept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let id = "0123456789abcdef0123456789abcdef".to_owned();
        let file = MediaFile {
            id: id.clone(),
            account_id: "a".into(),
            mime: "image/png".into(),
            bytes: 3,
            created_at_ms: 0,
            expires_at_ms: 1_000,
        };
        store.put_media(&file, b"png").unwrap();
        assert_eq!(store.get_media(&id, 500).unwrap().unwrap().1, b"png");
        assert!(store.get_media(&id, 1_000).unwrap().is_none(), "expired");
        let bad = MediaFile { id: "../x".into(), ..file };
        assert!(store.put_media(&bad, b"x").is_err());
        // A record naming a path (never written by put_media) still reads nothing outside.
        std::fs::write(dir.path().join("x"), b"secret").unwrap();
        store.media_files.insert(&"../x", &bad).unwrap();
        assert!(store.get_media("../x", 500).unwrap().is_none());
        assert_eq!(store.sweep_media(2_000).unwrap(), 2, "both records expired");
        assert!(!dir.path().join("media").join(&id).exists());
        assert!(dir.path().join("x").exists(), "the sweep removes nothing outside media/");
        assert_eq!(store.sweep_media(2_000).unwrap(), 0);
    }

    #[test]
    fn an_upload_is_served_once_committed_and_leaves_nothing_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let id = "00000000000000000000000000000abc";
        let file = MediaFile {
            id: id.into(),
            account_id: "a".into(),
            mime: "video/mp4".into(),
            bytes: 0,
            created_at_ms: 0,
            expires_at_ms: i64::MAX,
        };
        let mut upload = store.begin_media(id).unwrap();
        upload.write(b"part one, ").unwrap();
        upload.write(b"part two").unwrap();
        assert!(store.media_path(id, 0).unwrap().is_none(), "nothing is served before the commit");
        store.commit_media(upload, &file).unwrap();
        let (kept, path) = store.media_path(id, 0).unwrap().unwrap();
        assert_eq!((kept.bytes, std::fs::read(path).unwrap()), (18, b"part one, part two".to_vec()));

        let other = "00000000000000000000000000000def";
        let mut dropped = store.begin_media(other).unwrap();
        dropped.write(b"half a video").unwrap();
        drop(dropped);
        let left: Vec<_> =
            std::fs::read_dir(dir.path().join("media")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from(id)], "the dropped upload's staged file is gone");
        assert!(store.begin_media("../escape").is_err());

        // What a crash leaves (a staged upload, a file whose record was never written) goes
        // once it is older than any download still running; the served file stays.
        let media = dir.path().join("media");
        std::fs::write(media.join(".00000000000000000000000000000fff.tmp"), b"half").unwrap();
        std::fs::write(media.join("00000000000000000000000000000eee"), b"no record").unwrap();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
        store.sweep_media(now).unwrap();
        assert_eq!(std::fs::read_dir(&media).unwrap().count(), 3, "too young to be a leftover");
        store.sweep_media(now + super::MEDIA_LEFTOVER_AGE_MS + 1_000).unwrap();
        let left: Vec<_> = std::fs::read_dir(&media).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from(id)], "only the recorded file is left");
    }
}
