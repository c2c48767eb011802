//! The committed Rust side of cuda/params.h, src/backend/gpu/params_bindings.rs,
//! is what bindgen makes of the header today. The build does not run bindgen (a
//! fresh machine needs only Rust and a C/C++ compiler, no libclang); this test
//! does, with the only Builder options there are, and fails when the committed
//! file is stale. Refresh it with
//!
//!     TMOE_REGEN_PARAMS=1 cargo test --test params_bindings
//!
//! Needs libclang at run time (bindgen's `runtime` feature loads it; compiling
//! needs none): without it the test skips visibly, and fails under `TMOE_CI=1`.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

const REFRESH: &str = "TMOE_REGEN_PARAMS=1 cargo test --test params_bindings";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The committed file's full text, generated from `header`: bindgen's output
/// for everything the header declares (the `*Params` structs, bf16, the
/// `#define`d tile constants and kernel limits), then one `KernelParams` impl
/// per `typedef struct *Params`.
fn generate(header: &Path) -> String {
    let bindings = bindgen::Builder::default()
        .header(header.to_string_lossy())
        // Everything params.h declares (not what it includes: <stdint.h>'s
        // macros vary with the C library).
        .allowlist_file(".*[/\\\\]cuda[/\\\\]params\\.h")
        .derive_default(true)
        .derive_debug(true)
        .layout_tests(false)
        .generate_comments(true)
        .generate()
        .unwrap_or_else(|e| panic!("bindgen failed on {}: {e}", header.display()));
    let mut text = format!(
        "// @generated from cuda/params.h by bindgen (tests/params_bindings.rs); do not edit.\n\
         // After changing cuda/params.h, refresh it with:\n\
         //     {REFRESH}\n\
         // (needs libclang: apt-get install -y libclang-dev). Included by params.rs.\n\
         // cuda/params.h FNV-1a 64: {:016x}\n\n",
        fnv1a64(&std::fs::read(header).unwrap())
    );
    text.push_str(&bindings.to_string());
    // Every *Params struct may be launched; the marker trait says so.
    text.push_str("\n// Every *Params struct is a kernel's launch parameters.\n");
    let src = std::fs::read_to_string(header).unwrap();
    for line in src.lines() {
        if let Some(rest) = line.trim().strip_prefix("typedef struct ") {
            let name = rest.split_whitespace().next().unwrap_or("");
            if name.ends_with("Params") {
                writeln!(
                    text,
                    "unsafe impl crate::backend::gpu::launch::KernelParams for {name} {{}}"
                )
                .unwrap();
            }
        }
    }
    text
}

/// FNV-1a (64-bit) of the header's bytes, recorded in the generated file so
/// that build.rs (which has no libclang) can warn when the header changed.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
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
