//! Evaluation: confusion matrices, metrics, reports, figures, and batched
//! classifier inference.

pub mod captures;
pub mod confusion;
pub mod evaluate;
pub mod lm;
pub mod metrics;
pub mod plot;
pub mod plot_routing;
pub mod predict;
pub mod report;
pub mod routing;
