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
        if !valid_id(&file.id) {
            return Err(StorageError::Invalid(format!("media id {:?} is not 32 hex characters", file.id)));
        }
        let dir = self.media_dir();
        let io = |source| StorageError::Io { path: dir.display().to_string(), source };
        std::fs::create_dir_all(&dir).map_err(io)?;
        let staged = dir.join(format!(".{}.tmp", file.id));
        std::fs::write(&staged, bytes).map_err(io)?;
        std::fs::rename(&staged, dir.join(&file.id)).map_err(io)?;
        self.media_files.insert(&file.id.as_str(), file)
    }

    /// A file that has not expired, with its bytes.
    pub fn get_media(&self, id: &str, now_ms: i64) -> Result<Option<(MediaFile, Vec<u8>)>, StorageError> {
        if !valid_id(id) {
            return Ok(None);
        }
        let Some(file) = self.media_files.get(&id)?.filter(|f| f.expires_at_ms > now_ms) else { return Ok(None) };
        match std::fs::read(self.media_dir().join(id)) {
            Ok(bytes) => Ok(Some((file, bytes))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StorageError::Io { path: self.media_dir().display().to_string(), source }),
        }
    }

    /// Removes expired files and their records; returns how many.
    pub fn sweep_media(&self, now_ms: i64) -> Result<usize, StorageError> {
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
}
