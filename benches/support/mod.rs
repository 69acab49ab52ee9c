//! Shared by the benches that run the real server binary.

use std::path::{Path, PathBuf};
use std::process::Command;

fn target_dir() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => manifest.join(dir), // `join` keeps an absolute path as is.
        _ => manifest.join("target"),
    }
}

/// `target/release/tokaroo`, built first when it is missing.
pub fn gateway_binary() -> PathBuf {
    let dir = target_dir();
    let bin = dir.join("release").join(format!("tokaroo{}", std::env::consts::EXE_SUFFIX));
    if !bin.exists() {
        println!("{} is missing: running `cargo build --release --bin tokaroo` ...", bin.display());
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--release", "--bin", "tokaroo"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("CARGO_TARGET_DIR", &dir)
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build --release --bin tokaroo failed: {status}");
        assert!(bin.exists(), "cargo build did not produce {}", bin.display());
    }
    bin
}
