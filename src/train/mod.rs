//! (in progress)

pub mod checkpoint;
pub mod optim;
pub mod schedule;
