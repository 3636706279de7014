//! Builds the `store_worker` example once and returns its path. Uses the cargo that runs the
//! tests and its `CARGO_TARGET_DIR`; under `cargo test --all-features` (CI) the example is
//! already built and this is a no-op.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

pub(crate) fn store_worker() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let out = Command::new(cargo)
            .args([
                "build",
                "--example",
                "store_worker",
                "--all-features",
                "--message-format=json-render-diagnostics",
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stderr(Stdio::inherit())
            .output()
            .expect("run cargo build --example store_worker");
        assert!(
            out.status.success(),
            "building the store_worker example failed"
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find_map(|v| {
                (v["reason"] == "compiler-artifact" && v["target"]["name"] == "store_worker")
                    .then(|| v["executable"].as_str().map(PathBuf::from))
                    .flatten()
            })
            .expect("cargo reported no store_worker executable")
    })
    .clone()
}
