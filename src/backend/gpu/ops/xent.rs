//! Launch wrappers for cuda/xent.cu: fused softmax cross-entropy (loss and
//! dlogits in one pass over each row, no probability matrix) and the mean.

use half::bf16;

use crate::backend::gpu::params::{XentFwdBwdParams, XentMeanParams};
use crate::backend::gpu::{Buf, Executor, GpuError, Launch};

type Result<T> = std::result::Result<T, GpuError>;

fn dims(tokens: usize, vocab: usize) -> Result<(i32, i32)> {
    match (i32::try_from(tokens), i32::try_from(vocab)) {
        (Ok(t), Ok(v)) if t > 0 && v > 0 => Ok((t, v)),
        _ => Err(GpuError::Invalid(format!(
            "xent: bad shape tokens {tokens} vocab {vocab}"
        ))),
    }
}

/// Block size (one block per row): about 64 logits per thread (two unrolled
/// rounds of four 16-byte loads), whole warps, 64..=512 (`XENT_MAX_THREADS`).
fn threads(vocab: usize) -> u32 {
    (vocab.div_ceil(64).div_ceil(32) * 32).clamp(64, 512) as u32
}

/// `losses [T]` = per-row loss (0 for `ignore`); when `grad` is given,
/// `(dlogits, grad_scale)`: dlogits [T, V] = grad_scale * (softmax - onehot),
/// zero rows for ignored targets. `dlogits` may be `logits` (in place), and
/// must otherwise share its address modulo 16 bytes (any two buffers do).
/// For the mean loss's gradient, grad_scale = dloss / (number of non-ignored targets).
/// Rows are `ld` elements apart, the first `vocab` of them the logits (`ld`
/// = `vocab`, or a vocabulary padded to a multiple of 8, which keeps the
/// rows and the GEMMs around them on 16-byte boundaries); padding columns
/// are neither read nor written.
#[allow(clippy::too_many_arguments)]
pub fn fwd_bwd(
    ex: &Executor,
    logits: &Buf<bf16>,
    targets: &Buf<u32>,
    ignore: u32,
    losses: &Buf<f32>,
    grad: Option<(&Buf<bf16>, f32)>,
    tokens: usize,
    vocab: usize,
    ld: usize,
) -> Result<()> {
    let (t, v) = dims(tokens, vocab)?;
    if ld < vocab {
        return Err(GpuError::Invalid(format!(
            "xent: row stride {ld} below the vocabulary {vocab}"
        )));
    }
    let span = tokens * ld;
    ex.check_buf("xent logits", logits, span)?;
    ex.check_buf("xent targets", targets, tokens)?;
    ex.check_buf("xent losses", losses, tokens)?;
    if let Some((d, _)) = grad {
        ex.check_buf("xent dlogits", d, span)?;
        // The kernel splits both rows at the same 16-byte boundaries.
        if !(d.addr() ^ logits.addr()).is_multiple_of(16) {
            return Err(GpuError::Invalid(
                "xent: dlogits and logits must have the same 16-byte alignment".into(),
            ));
        }
    }
    let params = XentFwdBwdParams {
        logits: logits.cptr(),
        dlogits: grad.map_or(std::ptr::null_mut(), |(d, _)| d.mptr()),
        targets: targets.cptr(),
        losses: losses.mptr(),
        ld: ld as i64,
        tokens: t,
        vocab: v,
        ignore_index: ignore,
        grad_scale: grad.map_or(0.0, |(_, s)| s),
    };
    ex.launch(&Launch::linear(
        "xent_fwd_bwd",
        tokens as u32,
        threads(vocab),
        params,
    ))
}

/// `loss [1]` = mean of losses over rows whose target is not `ignore` (0 if none).
pub fn mean(
    ex: &Executor,
    losses: &Buf<f32>,
    targets: &Buf<u32>,
    ignore: u32,
    loss: &Buf<f32>,
    tokens: usize,
) -> Result<()> {
    let (t, _) = dims(tokens, 1)?;
    ex.check_buf("xent mean losses", losses, tokens)?;
    ex.check_buf("xent mean targets", targets, tokens)?;
    ex.check_buf("xent mean loss", loss, 1)?;
    let params = XentMeanParams {
        losses: losses.cptr(),
        targets: targets.cptr(),
        loss: loss.mptr(),
        tokens: t,
        ignore_index: ignore,
    };
    ex.launch(&Launch::linear("xent_mean", 1, 1024, params))
}
