//! Typed launch wrappers, one file per kernel family in cuda/ (same names).

pub mod embed;
pub mod rmsnorm;
