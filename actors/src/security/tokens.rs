//! Secrets handed to users: runtime API keys (`tok_...`) and dashboard session tokens.
//! Both are 43 base62 characters from the OS-seeded CSPRNG (≈256 bits) and are stored only
//! as their SHA-256.

use rand::{distr::Alphanumeric, Rng};
use sha2::{Digest, Sha256};

pub const API_KEY_PREFIX: &str = "tok_";
pub const SESSION_PREFIX: &str = "tks_";
const SECRET_CHARS: usize = 43;
/// How much of a key is kept for display (`tok_` plus 8 characters).
const DISPLAY_PREFIX_LEN: usize = 12;

fn random_base62() -> String {
    rand::rng().sample_iter(&Alphanumeric).take(SECRET_CHARS).map(char::from).collect()
}

pub fn new_api_key() -> String {
    format!("{API_KEY_PREFIX}{}", random_base62())
}

pub fn new_session_token() -> String {
    format!("{SESSION_PREFIX}{}", random_base62())
}

pub fn display_prefix(key: &str) -> String {
    key.chars().take(DISPLAY_PREFIX_LEN).collect()
}

pub fn sha256(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

pub fn sha256_hex(secret: &str) -> String {
    hex::encode(sha256(secret))
}

pub(crate) fn decode_hash(hex_digest: &str) -> Result<[u8; 32], crate::error::EngineError> {
    let bytes = hex::decode(hex_digest)
        .map_err(|e| crate::error::EngineError::Internal(format!("stored hash is not hex: {e}")))?;
    bytes.try_into().map_err(|_| crate::error::EngineError::Internal("stored hash is not 32 bytes".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_long_random_and_prefixed() {
        let a = new_api_key();
        let b = new_api_key();
        assert!(a.starts_with("tok_") && a.len() == 4 + SECRET_CHARS);
        assert_ne!(a, b);
        assert!(a[4..].chars().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(display_prefix(&a).len(), DISPLAY_PREFIX_LEN);
        assert!(new_session_token().starts_with("tks_"));
        assert_eq!(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
