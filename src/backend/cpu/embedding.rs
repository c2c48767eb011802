//! Token embedding lookup: `out[t] = table[ids[t]]`.

use crate::engine::float::Float;

pub fn fwd<F: Float>(ids: &[u32], table: &[F], d: usize, out: &mut [F]) {
    for (row, &id) in out.chunks_exact_mut(d).zip(ids) {
        let id = id as usize;
        row.copy_from_slice(&table[id * d..(id + 1) * d]);
    }
}

/// `dtable[ids[t]] += dout[t]` (parameter grad: accumulates).
pub fn bwd<F: Float>(ids: &[u32], dout: &[F], d: usize, dtable: &mut [F]) {
    for (row, &id) in dout.chunks_exact(d).zip(ids) {
        let id = id as usize;
        for (g, &v) in dtable[id * d..(id + 1) * d].iter_mut().zip(row) {
            *g += v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    #[test]
    fn gathers_rows_and_scatters_grads() {
        let d = 3;
        let table = vals(4 * d, 1);
        let ids = [2u32, 0, 2];
        let mut out = vec![0.0; 3 * d];
        fwd(&ids, &table, d, &mut out);
        assert_eq!(&out[..d], &table[2 * d..3 * d]);
        let dout = vals(3 * d, 2);
        let mut dt = vec![0.0; 4 * d];
        bwd(&ids, &dout, d, &mut dt);
        check_grad(
            &table,
            &dt,
            |tb| {
                let mut o = vec![0.0; 3 * d];
                fwd(&ids, tb, d, &mut o);
                dot(&o, &dout)
            },
            "dtable",
        );
    }
}
