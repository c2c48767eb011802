//! Evaluation: confusion matrices, metrics, reports and figures.

pub mod confusion;
pub mod metrics;
pub mod plot;
pub mod report;
