//! Kernel-parameter structs, generated at build time by bindgen from
//! cuda/params.h (the single source of truth; see cuda/README.md for why it is
//! not committed). Pointers are device addresses: fill them with
//! [`Buf::cptr`](super::Buf::cptr) / [`Buf::mptr`](super::Buf::mptr).
#![allow(
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    dead_code
)]
#![allow(clippy::all)]

include!(concat!(env!("OUT_DIR"), "/params.rs"));
