//! The committed Rust side of cuda/params.h, src/backend/gpu/params_bindings.rs,
//! is what bindgen makes of the header today. The build does not run bindgen (a
//! fresh machine needs only Rust and a C/C++ compiler, no libclang); this test
//! does, with the only Builder options there are, and fails when the committed
//! file is stale. Refresh it with
//!
//!     cargo run --manifest-path tools/regen-params/Cargo.toml
//!
//! (a tool that does not link the crate, so it works while the committed
//! file is too stale for the crate to build), or with
//!
//!     TMOE_REGEN_PARAMS=1 cargo test --test params_bindings
//!
//! Needs libclang at run time (bindgen's `runtime` feature loads it; compiling
//! needs none): without it the test skips visibly, and fails under `TMOE_CI=1`.

use std::io::Write as _;
use std::path::PathBuf;

#[path = "../tools/regen-params/src/generate.rs"]
mod generate;
use generate::{REFRESH, generate};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn committed_params_bindings_are_fresh() {
    let regen = std::env::var("TMOE_REGEN_PARAMS").is_ok_and(|v| v == "1");
    if let Err(e) = clang_sys::load() {
        if regen {
            panic!("TMOE_REGEN_PARAMS=1 needs libclang ({e}): apt-get install -y libclang-dev");
        }
        return traffic_moe::testing::skip_or_fail(format_args!(
            "libclang not found ({e}); cannot check src/backend/gpu/params_bindings.rs \
             against cuda/params.h (install: apt-get install -y libclang-dev)"
        ));
    }
    let root = root();
    let committed_path = root.join("src/backend/gpu/params_bindings.rs");
    let fresh = generate(&root.join("cuda/params.h"));
    if regen {
        if std::fs::read_to_string(&committed_path).ok().as_deref() != Some(fresh.as_str()) {
            std::fs::write(&committed_path, &fresh).unwrap();
            let line = format!("wrote {}\n", committed_path.display());
            let _ = std::io::stderr().write_all(line.as_bytes());
        }
        return;
    }
    let committed = std::fs::read_to_string(&committed_path).unwrap_or_default();
    if committed != fresh {
        let first = committed
            .lines()
            .zip(fresh.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(committed.lines().count().min(fresh.lines().count()));
        panic!(
            "src/backend/gpu/params_bindings.rs is stale: it differs from bindgen's output \
             for cuda/params.h from line {}:\n  committed: {:?}\n  bindgen:   {:?}\n\
             Refresh it with:\n    {REFRESH}",
            first + 1,
            committed.lines().nth(first).unwrap_or("<end of file>"),
            fresh.lines().nth(first).unwrap_or("<end of file>"),
        );
    }
}
