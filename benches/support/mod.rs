//! Shared by the benches that run the real server binary.

// Each bench compiles this module on its own and uses only part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn target_dir() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => manifest.join(dir), // `join` keeps an absolute path as is.
        _ => manifest.join("target"),
    }
}

/// `TOKAROO_BENCH_BIN` when set (to compare two builds), else `target/release/tokaroo`,
/// built first when it is missing. Rebuild after a change: an existing binary is used as is.
pub fn gateway_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("TOKAROO_BENCH_BIN").filter(|b| !b.is_empty()) {
        return PathBuf::from(bin);
    }
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

/// A `tokaroo serve` process started by a bench.
pub struct Started {
    pub child: std::process::Child,
    pub addr: std::net::SocketAddr,
    /// The bootstrap API key, printed when the data directory was new.
    pub api_key: Option<String>,
}

/// Starts the gateway on a random loopback port over `data_dir`, from `cwd` (so no
/// `config/tokaroo.toml` is picked up by accident), with `envs` added, and waits for the line
/// that gives its address. Its stdout keeps being drained so the pipe never fills.
pub fn start_gateway(data_dir: &Path, cwd: &Path, envs: &[(&str, &str)], stderr: std::process::Stdio) -> Started {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let bin = gateway_binary();
    let mut command = Command::new(&bin);
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .current_dir(cwd)
        // The benches measure routing and settling: identical requests must not be cache hits.
        .env("TOKAROO_CACHE_ENABLED", "false")
        // One copy of the embedding model for every bench's server (pulled by the first).
        .env("TOKAROO_EMBED_MODEL_DIR", tokaroo_actors::test_support::test_model_path())
        .env("TOKAROO_STATIC_MODEL_DIR", tokaroo_actors::test_support::test_static_model_path())
        .env("TOKAROO_LOG_LEVEL", "warn")
        .env_remove("RUST_LOG")
        .env_remove("TOKAROO_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr);
    for (key, value) in envs {
        command.env(key, value);
    }
    let mut child = command.spawn().unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut api_key = None;
    while let Ok(line) = rx.recv_timeout(std::time::Duration::from_secs(60)) {
        if let Some(rest) = line.split("api key (workspace `default`):").nth(1) {
            api_key = Some(rest.trim().to_owned());
        } else if let Some(addr) = line.strip_prefix("Tokaroo listening on http://").and_then(|a| a.trim().parse().ok())
        {
            return Started { child, addr, api_key };
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the gateway did not report its address (its stderr is where the bench sent it)");
}
