//! The CPU side of the tape's op interface ([`crate::autograd::Backend`]):
//! host vectors, each op a call to the reference op of the same name.

use super::lm_head::{self, LmHeadSaved};
use super::lm_head_train;
use super::matmul::Products;
use super::mha::{self, MhaSaved};
use super::moe::{self, MoeGrads, MoeSaved, MoeWeights};
use super::{Float, act, alloc, embedding, ffn, linear, pool, rmsnorm, swiglu, xent};
use crate::engine::ffn::inference_forward;
use crate::engine::{
    AttnDims as Dims, Backend, FfnDims, FfnGradRefs, FfnRefs, MoeDims, MoeGradRefs, MoeRefs,
    OpError, OpResult,
};
use rayon::prelude::*;

/// The CPU backend: the ops parallelise with rayon themselves; `products`
/// says how its linear layers', experts' and LM head's products multiply
/// (exact f32 by default, or mixed precision: [`Products`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu {
    pub products: Products,
}

impl Cpu {
    /// Exact f32 (or f64) products: the reference.
    pub const EXACT: Cpu = Cpu {
        products: Products::F32,
    };

    pub fn with_products(products: Products) -> Cpu {
        Cpu { products }
    }
}

fn moe_weights<'a, F>(w: MoeRefs<'a, [F]>) -> MoeWeights<'a, F> {
    let [
        router,
        shared_gate,
        s_gate,
        s_up,
        s_down,
        e_gate,
        e_up,
        e_down,
    ] = w;
    MoeWeights {
        router,
        shared_gate,
        s_gate,
        s_up,
        s_down,
        e_gate,
        e_up,
        e_down,
    }
}

impl<F: Float> Backend<F> for Cpu {
    type Tensor = Vec<F>;
    type Param = [F];
    type AttnSaved = MhaSaved<F>;
    type MoeSaved = MoeSaved<F>;
    type FfnSaved = Option<ffn::Saved<F>>;
    type LmHeadSaved = LmHeadSaved<F>;

    fn name(&self) -> &'static str {
        "cpu"
    }
    fn len(&self, x: &Vec<F>) -> usize {
        x.len()
    }
    fn to_host(&self, x: &Vec<F>) -> OpResult<Vec<F>> {
        Ok(x.clone())
    }
    fn zeros(&self, n: usize) -> OpResult<Vec<F>> {
        Ok(alloc::zeros(n))
    }
    fn scalar(&self, v: F) -> OpResult<Vec<F>> {
        Ok(vec![v])
    }
    fn add_assign(&self, acc: &mut Vec<F>, x: &Vec<F>) -> OpResult<()> {
        super::simd::add_into(acc, x);
        Ok(())
    }
    fn add(&self, a: &Vec<F>, b: &Vec<F>) -> OpResult<Vec<F>> {
        Ok(alloc::par_written(a.len().min(b.len()), 1 << 14, |i, o| {
            let at = i << 14;
            o.iter_mut()
                .zip(&a[at..])
                .zip(&b[at..])
                .for_each(|((o, &x), &y)| *o = x + y);
        }))
    }

    fn embedding_fwd(&self, ids: &[u32], table: &[F], d: usize) -> OpResult<Vec<F>> {
        ids_in_table("embedding_fwd", ids, table.len(), d)?;
        let mut y = alloc::zeros(ids.len() * d);
        embedding::fwd(ids, table, d, &mut y);
        Ok(y)
    }
    fn embedding_bwd(&self, ids: &[u32], dy: &Vec<F>, d: usize, dtable: &mut [F]) -> OpResult<()> {
        ids_in_table("embedding_bwd", ids, dtable.len(), d)?;
        embedding::bwd(ids, dy, d, dtable);
        Ok(())
    }

    fn rmsnorm_fwd(&self, x: &Vec<F>, w: &[F], d: usize) -> OpResult<(Vec<F>, Vec<F>)> {
        let (mut y, mut rstd) = (alloc::uninit(x.len()), alloc::uninit(x.len() / d));
        rmsnorm::fwd(x, w, d, F::from_f64(1e-6), &mut y, &mut rstd);
        // SAFETY: `fwd` writes every element of both.
        Ok(unsafe { (alloc::assume_init(y), alloc::assume_init(rstd)) })
    }
    fn rmsnorm_bwd(
        &self,
        x: &Vec<F>,
        w: &[F],
        rstd: &Vec<F>,
        dy: &Vec<F>,
        d: usize,
        dw: &mut [F],
    ) -> OpResult<Vec<F>> {
        let mut dx = alloc::uninit(x.len());
        rmsnorm::bwd(x, w, rstd, dy, d, &mut dx, dw);
        // SAFETY: `bwd` writes every element of dx.
        Ok(unsafe { alloc::assume_init(dx) })
    }

    fn linear_fwd(
        &self,
        x: &Vec<F>,
        w: &[F],
        b: Option<&[F]>,
        rows: usize,
        din: usize,
        dout: usize,
    ) -> OpResult<Vec<F>> {
        Ok(linear::fwd_new_in(self.products, x, w, b, rows, din, dout))
    }
    fn linear_bwd(
        &self,
        x: &Vec<F>,
        w: &[F],
        dy: &Vec<F>,
        rows: usize,
        din: usize,
        dout: usize,
        dw: &mut [F],
        db: Option<&mut [F]>,
    ) -> OpResult<Vec<F>> {
        // dx = dy·w, a new matrix; then dw and the bias gradient.
        let p = self.products;
        let dx = linear::product_in(p, rows, din, dout, dy, false, w, false);
        linear::bwd_in(p, x, w, dy, rows, din, dout, None, dw, db);
        Ok(dx)
    }

    fn swiglu_fwd(&self, gate: &Vec<F>, up: &Vec<F>) -> OpResult<Vec<F>> {
        Ok(swiglu::fwd_new(gate, up))
    }
    fn swiglu_bwd(&self, gate: &Vec<F>, up: &Vec<F>, dy: &Vec<F>) -> OpResult<(Vec<F>, Vec<F>)> {
        Ok(swiglu::bwd_new(gate, up, dy))
    }

    fn gelu_fwd(&self, x: &Vec<F>) -> OpResult<Vec<F>> {
        let mut y = alloc::zeros(x.len());
        act::gelu_fwd(x, &mut y);
        Ok(y)
    }
    fn gelu_bwd(&self, x: &Vec<F>, dy: &Vec<F>) -> OpResult<Vec<F>> {
        let mut dx = alloc::zeros(x.len());
        act::gelu_bwd(x, dy, &mut dx);
        Ok(dx)
    }

    fn attention_fwd(
        &self,
        qkv: &Vec<F>,
        mask: &[u8],
        dims: &Dims,
        theta: f64,
    ) -> OpResult<(Vec<F>, MhaSaved<F>)> {
        Ok(mha::fwd(qkv, mask, dims, theta))
    }
    fn attention_bwd(
        &self,
        saved: &MhaSaved<F>,
        dy: &Vec<F>,
        dims: &Dims,
        theta: f64,
    ) -> OpResult<Vec<F>> {
        Ok(mha::bwd(saved, dy, dims, theta))
    }

    fn moe_fwd(
        &self,
        z: &Vec<F>,
        resid: &Vec<F>,
        mask: &[u8],
        w: MoeRefs<[F]>,
        dims: &MoeDims,
        _train: bool,
    ) -> OpResult<(Vec<F>, MoeSaved<F>)> {
        let mut y = alloc::uninit(dims.t * dims.d);
        let saved = moe::fwd(
            self.products,
            z,
            resid,
            &moe_weights(w),
            dims,
            Some(mask),
            &mut y,
        );
        // SAFETY: `moe::fwd` writes every element of its output.
        Ok((unsafe { alloc::assume_init(y) }, saved))
    }
    fn moe_aux(&self, saved: &MoeSaved<F>) -> OpResult<Vec<F>> {
        Ok(vec![saved.aux])
    }
    fn moe_routing(&self, saved: &MoeSaved<F>) -> OpResult<Vec<u32>> {
        Ok(saved.topk_idx.clone())
    }
    fn moe_bwd(
        &self,
        z: &Vec<F>,
        w: MoeRefs<[F]>,
        saved: &MoeSaved<F>,
        dy: &Vec<F>,
        aux_weight: F,
        dims: &MoeDims,
        grads: MoeGradRefs<[F]>,
    ) -> OpResult<Vec<F>> {
        let [
            router,
            shared_gate,
            s_gate,
            s_up,
            s_down,
            e_gate,
            e_up,
            e_down,
        ] = grads;
        let gr = MoeGrads {
            router,
            shared_gate,
            s_gate,
            s_up,
            s_down,
            e_gate,
            e_up,
            e_down,
        };
        let mut dz = alloc::uninit(z.len());
        moe::bwd(
            self.products,
            z,
            &moe_weights(w),
            saved,
            dy,
            aux_weight,
            dims,
            &mut dz,
            gr,
        );
        // SAFETY: `moe::bwd` writes every element of dz.
        Ok(unsafe { alloc::assume_init(dz) })
    }

    /// The FFN on rows (`ffn`): in mixed precision SwiGLU's output and
    /// gradients are packed for the weight gradients as they are written.
    fn ffn_fwd(
        &self,
        z: &Vec<F>,
        resid: &Vec<F>,
        w: FfnRefs<[F]>,
        dims: &FfnDims,
        train: bool,
    ) -> OpResult<(Vec<F>, Self::FfnSaved)> {
        let FfnDims { t, d, ff } = *dims;
        check_ffn("ffn_fwd", z, w, dims)?;
        if resid.len() != t * d {
            return Err(OpError::msg("ffn_fwd", "residual of the wrong size"));
        }
        let mut y = alloc::uninit(t * d);
        let saved = ffn::fwd(self.products, z, w, t, d, ff, train, &mut y);
        // SAFETY: `ffn::fwd` writes every element of y.
        let mut y = unsafe { alloc::assume_init(y) };
        // resid + y, as the model's residual add.
        y.par_chunks_mut(1 << 14)
            .zip(resid.par_chunks(1 << 14))
            .for_each(|(o, r)| o.iter_mut().zip(r).for_each(|(o, &r)| *o = r + *o));
        Ok((y, saved))
    }
    fn ffn_bwd(
        &self,
        z: &Vec<F>,
        w: FfnRefs<[F]>,
        saved: &Self::FfnSaved,
        dy: &Vec<F>,
        dims: &FfnDims,
        grads: FfnGradRefs<[F]>,
    ) -> OpResult<Vec<F>> {
        let FfnDims { t, d, ff } = *dims;
        check_ffn("ffn_bwd", z, w, dims)?;
        let s = saved.as_ref().ok_or_else(|| inference_forward("ffn_bwd"))?;
        if dy.len() != t * d || grads.iter().zip(w).any(|(g, w)| g.len() != w.len()) {
            return Err(OpError::msg(
                "ffn_bwd",
                "output gradient or weight gradients of the wrong size",
            ));
        }
        let mut dz = alloc::uninit(t * d);
        ffn::bwd(self.products, z, w, s, dy, t, d, ff, &mut dz, grads);
        // SAFETY: `ffn::bwd` writes every element of dz.
        Ok(unsafe { alloc::assume_init(dz) })
    }

    fn mean_pool_fwd(
        &self,
        x: &Vec<F>,
        mask: &[u8],
        b: usize,
        s: usize,
        d: usize,
    ) -> OpResult<Vec<F>> {
        let mut y = vec![F::ZERO; b * d];
        pool::mean_fwd(x, mask, b, s, d, &mut y);
        Ok(y)
    }
    fn mean_pool_bwd(
        &self,
        dy: &Vec<F>,
        mask: &[u8],
        b: usize,
        s: usize,
        d: usize,
    ) -> OpResult<Vec<F>> {
        let mut dx = alloc::zeros(b * s * d);
        pool::mean_bwd(dy, mask, b, s, d, &mut dx);
        Ok(dx)
    }

    fn xent_fwd(&self, logits: &Vec<F>, targets: &[u32], ignore: u32) -> OpResult<F> {
        let mut losses = vec![F::ZERO; targets.len()];
        Ok(xent::fwd(logits, targets, ignore, &mut losses))
    }
    fn xent_bwd(
        &self,
        logits: &Vec<F>,
        targets: &[u32],
        ignore: u32,
        dloss: F,
    ) -> OpResult<Vec<F>> {
        let mut dl = alloc::zeros(logits.len());
        xent::bwd(logits, targets, ignore, dloss, &mut dl);
        Ok(dl)
    }

    fn lm_head_xent_fwd(
        &self,
        h: &Vec<F>,
        table: &[F],
        d: usize,
        targets: &[u32],
        ignore: u32,
    ) -> OpResult<(F, LmHeadSaved<F>)> {
        Ok(lm_head::fwd(self.products, h, table, d, targets, ignore))
    }
    /// Loss, `dh` and `dE` in one pass over the logits
    /// ([`lm_head_train`]): three products instead of four.
    fn lm_head_xent_train_fwd(
        &self,
        h: &Vec<F>,
        table: &[F],
        d: usize,
        targets: &[u32],
        ignore: u32,
    ) -> OpResult<(F, LmHeadSaved<F>)> {
        Ok(lm_head_train::train_fwd(
            self.products,
            h,
            table,
            d,
            targets,
            ignore,
        ))
    }
    fn lm_head_xent_bwd(
        &self,
        h: &Vec<F>,
        table: &[F],
        d: usize,
        targets: &[u32],
        saved: &LmHeadSaved<F>,
        dloss: F,
        dtable: &mut [F],
    ) -> OpResult<Vec<F>> {
        Ok(lm_head::bwd(
            self.products,
            h,
            table,
            d,
            targets,
            saved,
            dloss,
            dtable,
        ))
    }
}

/// The FFN's input and weights against its dims.
fn check_ffn<F>(op: &'static str, z: &[F], w: FfnRefs<[F]>, dims: &FfnDims) -> OpResult<()> {
    let FfnDims { t, d, ff } = *dims;
    let [wg, wu, wd] = w;
    if z.len() != t * d || wg.len() != ff * d || wu.len() != ff * d || wd.len() != d * ff {
        return Err(OpError::msg(op, format!("shapes do not match {dims:?}")));
    }
    Ok(())
}

/// Every id has a row in a `table_len`-element table of `d`-wide rows (an
/// id past it indexed out of bounds: a panic, where the bf16 engine and
/// the kernels give an error).
fn ids_in_table(op: &'static str, ids: &[u32], table_len: usize, d: usize) -> OpResult<()> {
    let rows = table_len / d.max(1);
    match ids.iter().find(|&&id| id as usize >= rows) {
        Some(id) => Err(OpError::msg(
            op,
            format!("token id {id} is past the table's {rows} rows"),
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_id_past_the_table_is_an_error_naming_the_op() {
        let (d, table) = (4, vec![0.5f32; 3 * 4]);
        let y = Cpu::EXACT.embedding_fwd(&[2, 0], &table, d).unwrap();
        assert_eq!(y.len(), 2 * d);
        let e = Cpu::EXACT.embedding_fwd(&[1, 3], &table, d).unwrap_err();
        assert!(
            e.to_string()
                .contains("token id 3 is past the table's 3 rows"),
            "{e}"
        );
        let mut dtable = vec![0.0f32; 3 * 4];
        let e = Cpu::EXACT
            .embedding_bwd(&[7], &vec![1.0; d], d, &mut dtable)
            .unwrap_err();
        assert!(e.to_string().contains("embedding_bwd"), "{e}");
    }
}
