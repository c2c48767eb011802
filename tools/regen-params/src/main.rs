//! Refreshes src/backend/gpu/params_bindings.rs from cuda/params.h:
//!
//!     cargo run --manifest-path tools/regen-params/Cargo.toml
//!
//! Needs libclang (apt-get install -y libclang-dev).

mod generate;

use std::path::PathBuf;

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let path = root.join("src/backend/gpu/params_bindings.rs");
    let fresh = generate::generate(&root.join("cuda/params.h"));
    if std::fs::read_to_string(&path).ok().as_deref() == Some(fresh.as_str()) {
        println!("{} is fresh", path.display());
    } else {
        std::fs::write(&path, fresh).expect("writing params_bindings.rs");
        println!("wrote {}", path.display());
    }
}
