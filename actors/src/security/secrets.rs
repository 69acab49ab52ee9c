//! Provider secrets and endpoint headers at rest: AES-256-GCM under a master key taken from
//! `TOKAROO_MASTER_KEY` (64 hex characters) or, failing that, a 0600 file `master.key` in the
//! data directory, created on first use. Ciphertexts are `v1:` + base64(nonce ‖ ciphertext).

use std::{io::Write, path::Path};

use aes_gcm::{
    aead::{Aead, KeyInit},
    Aes256Gcm, Nonce,
};
use base64::{engine::general_purpose::STANDARD, Engine as _};
use rand::RngCore;

use crate::error::EngineError;

const PREFIX: &str = "v1:";

/// A secret held in configuration (an admin token, a provider or Stripe key, a master key).
/// `Debug` prints `<redacted>`, so a config dumped into a log line or a panic message never
/// carries it; code that needs the value asks for it by name with [`Secret::expose`].
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

#[derive(Clone)]
pub struct SecretBox {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(..)")
    }
}

impl SecretBox {
    pub fn from_key(key: [u8; 32]) -> Self {
        Self { cipher: Aes256Gcm::new(&key.into()) }
    }

    /// The master key from `env_key` (hex) or `<data_dir>/master.key`, created 0600 if absent.
    pub fn load(env_key: Option<&str>, data_dir: &Path) -> Result<Self, EngineError> {
        if let Some(hex_key) = env_key.filter(|k| !k.is_empty()) {
            let bytes = hex::decode(hex_key.trim())
                .map_err(|_| EngineError::invalid("TOKAROO_MASTER_KEY must be 64 hex characters"))?;
            let key: [u8; 32] = bytes
                .try_into()
                .map_err(|_| EngineError::invalid("TOKAROO_MASTER_KEY must be 64 hex characters (32 bytes)"))?;
            return Ok(Self::from_key(key));
        }
        let path = data_dir.join("master.key");
        let io = |e: std::io::Error| EngineError::Internal(format!("master key file {}: {e}", path.display()));
        // A key file others can read would let any local user decrypt every provider key:
        // refuse to start rather than keep using it (the file we create is 0600).
        #[cfg(unix)]
        if let Ok(meta) = std::fs::metadata(&path) {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(EngineError::invalid(format!(
                    "master key file {} is readable by group or others (mode {mode:04o}); \
                     run `chmod 600 {}` and start again",
                    path.display(),
                    path.display()
                )));
            }
        }
        if let Ok(text) = std::fs::read_to_string(&path) {
            let bytes = hex::decode(text.trim())
                .map_err(|_| EngineError::Internal(format!("{} is not hex", path.display())))?;
            let key: [u8; 32] =
                bytes.try_into().map_err(|_| EngineError::Internal(format!("{} is not 32 bytes", path.display())))?;
            return Ok(Self::from_key(key));
        }
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&path).map_err(io)?;
        file.write_all(hex::encode(key).as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok(Self::from_key(key))
    }

    pub fn seal(&self, plaintext: &str) -> String {
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), plaintext.as_bytes())
            .expect("AES-GCM encryption cannot fail for in-memory input");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ciphertext);
        format!("{PREFIX}{}", STANDARD.encode(out))
    }

    pub fn open(&self, sealed: &str) -> Result<String, EngineError> {
        let fail = || EngineError::Internal("a stored secret could not be decrypted (wrong master key?)".into());
        let bytes = STANDARD.decode(sealed.strip_prefix(PREFIX).ok_or_else(fail)?).map_err(|_| fail())?;
        if bytes.len() < 12 {
            return Err(fail());
        }
        let (nonce, ciphertext) = bytes.split_at(12);
        let plain = self.cipher.decrypt(Nonce::from_slice(nonce), ciphertext).map_err(|_| fail())?;
        String::from_utf8(plain).map_err(|_| fail())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_is_randomised_and_tamper_evident() {
        let dir = tempfile::tempdir().unwrap();
        let sb = SecretBox::load(None, dir.path()).unwrap();
        let a = sb.seal("sk-secret");
        assert_ne!(a, sb.seal("sk-secret"), "fresh nonce each time");
        assert!(!a.contains("sk-secret"));
        assert_eq!(sb.open(&a).unwrap(), "sk-secret");
        let mut tampered = a.clone();
        tampered.replace_range(10..11, if &a[10..11] == "A" { "B" } else { "A" });
        assert!(sb.open(&tampered).is_err());
        // The key file is reused, and private.
        let again = SecretBox::load(None, dir.path()).unwrap();
        assert_eq!(again.open(&a).unwrap(), "sk-secret");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("master.key")).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let other = SecretBox::load(Some(&"11".repeat(32)), dir.path()).unwrap();
        assert!(other.open(&a).is_err());
        assert!(SecretBox::load(Some("abc"), dir.path()).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn a_master_key_file_readable_by_others_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        SecretBox::load(None, dir.path()).unwrap();
        let path = dir.path().join("master.key");
        for mode in [0o644, 0o640, 0o604, 0o660] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = SecretBox::load(None, dir.path()).unwrap_err().to_string();
            assert!(err.contains("chmod 600") && err.contains("master.key"), "{mode:o}: {err}");
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert!(SecretBox::load(None, dir.path()).is_ok(), "owner-only modes are fine");
    }

    #[test]
    fn secret_debug_is_redacted() {
        let s = Secret::new("sk-live-very-secret");
        assert_eq!(format!("{s:?}"), "\"<redacted>\"");
        assert!(!format!("{:?}", Some(s.clone())).contains("very-secret"));
        assert_eq!(s.expose(), "sk-live-very-secret");
    }
}
