//! Kernel-parameter structs and the constants of cuda/params.h (tile sizes,
//! kernel limits), as bindgen generates them from the header (the single source
//! of truth). The generated text is committed, in params_bindings.rs, so that
//! building needs no libclang; tests/params_bindings.rs fails when it is stale
//! and prints the command that refreshes it (see cuda/README.md). Pointers are
//! device addresses: fill them with [`Buf::cptr`](super::Buf::cptr) /
//! [`Buf::mptr`](super::Buf::mptr).
#![allow(
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    dead_code
)]
#![allow(clippy::all)]

include!("params_bindings.rs");
