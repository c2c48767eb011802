//! Ops are fallible: a launch or an allocation can fail on a device, and the
//! failure reaches the caller as an error naming the op, never a panic.

use std::error::Error as StdError;

/// An op that failed, with the engine's own error.
#[derive(Debug, thiserror::Error)]
#[error("{op}: {cause}")]
pub struct OpError {
    pub op: &'static str,
    /// The engine's error, in the message rather than `source()`, so that an
    /// error chain (`{:#}`) prints it once.
    pub cause: Box<dyn StdError + Send + Sync + 'static>,
}

pub type OpResult<T> = Result<T, OpError>;

impl OpError {
    /// An error of this crate's own making (bad shapes, a freed tensor).
    pub fn msg(op: &'static str, msg: impl Into<String>) -> OpError {
        OpError {
            op,
            cause: msg.into().into(),
        }
    }
}

/// `result.op("rmsnorm_fwd")?`: names the op on any engine error.
pub trait OpContext<T> {
    fn op(self, op: &'static str) -> OpResult<T>;
}

impl<T, E: StdError + Send + Sync + 'static> OpContext<T> for Result<T, E> {
    fn op(self, op: &'static str) -> OpResult<T> {
        self.map_err(|e| OpError {
            op,
            cause: Box::new(e),
        })
    }
}
