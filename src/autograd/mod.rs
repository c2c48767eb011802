//! Reverse-mode differentiation over whole-layer ops: a [`tape::Tape`]
//! records each op as it runs forward and replays the records backward.
//! Parameters live outside the tape in a [`params::ParamStore`].

pub mod params;
pub mod profile;
pub mod tape;

pub use crate::engine::Backend;
pub use params::{ParamId, ParamStore, Params};
pub use tape::{FfnParams, MoeParams, Op, Tape, TensorId};
