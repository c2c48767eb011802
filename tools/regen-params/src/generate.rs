//! What src/backend/gpu/params_bindings.rs holds: bindgen's output for
//! cuda/params.h plus the `KernelParams` impls. Shared by the freshness test
//! (tests/params_bindings.rs) and the refresh tool (this crate's main.rs),
//! which does not link traffic-moe, so it runs even while the committed file
//! is too stale for the crate to compile.

use std::fmt::Write as _;
use std::path::Path;

pub const REFRESH: &str = "cargo run --manifest-path tools/regen-params/Cargo.toml";

/// The committed file's full text, generated from `header`: bindgen's output
/// for everything the header declares (the `*Params` structs, bf16, the
/// `#define`d tile constants and kernel limits), then one `KernelParams` impl
/// per `typedef struct *Params`.
pub fn generate(header: &Path) -> String {
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
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
