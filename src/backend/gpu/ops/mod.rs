//! Typed launch wrappers, one file per kernel family in cuda/ (same names).

pub mod adamw;
pub mod attention;
pub mod elementwise;
pub mod embed;
pub mod gemm;
pub mod grad_norm;
pub mod moe_combine;
pub mod moe_permute;
pub mod moe_route;
pub mod pool;
pub mod rmsnorm;
pub mod rope;
pub mod rowdot;
pub mod swiglu;
pub mod xent;
