//! Where parameter values and gradients live, seen by the tape as two
//! parallel lists indexed by `ParamId` of the backend's parameter type `T`
//! (`[f32]` / `[f64]` on the CPU). Training (f32) uses the optimizer's
//! `Vec<Param>` directly; gradient checks use [`Params<f64>`].

use crate::engine::{Float, Param};

pub type ParamId = usize;

/// Split a parameter store into read-only values and writable gradients.
pub trait ParamStore<T: ?Sized> {
    fn values(&self) -> Vec<&T>;
    fn split(&mut self) -> (Vec<&T>, Vec<&mut T>);
}

impl ParamStore<[f32]> for [Param] {
    fn values(&self) -> Vec<&[f32]> {
        self.iter().map(|p| &p.value[..]).collect()
    }
    fn split(&mut self) -> (Vec<&[f32]>, Vec<&mut [f32]>) {
        self.iter_mut()
            .map(|p| (&p.value[..], &mut p.grad[..]))
            .unzip()
    }
}

impl ParamStore<[f32]> for Vec<Param> {
    fn values(&self) -> Vec<&[f32]> {
        self.as_slice().values()
    }
    fn split(&mut self) -> (Vec<&[f32]>, Vec<&mut [f32]>) {
        self.as_mut_slice().split()
    }
}

/// A plain store in any precision (f64 for gradient checks).
#[derive(Clone, Debug)]
pub struct Params<F> {
    pub values: Vec<Vec<F>>,
    pub grads: Vec<Vec<F>>,
}

impl<F: Float> Params<F> {
    /// Converts the optimizer's f32 parameters (values only; grads zeroed).
    pub fn from_f32(params: &[Param]) -> Self {
        let values: Vec<Vec<F>> = params
            .iter()
            .map(|p| p.value.iter().map(|&v| F::from_f64(v as f64)).collect())
            .collect();
        let grads = values.iter().map(|v| vec![F::ZERO; v.len()]).collect();
        Params { values, grads }
    }
    pub fn zero_grads(&mut self) {
        self.grads
            .iter_mut()
            .for_each(|g| g.iter_mut().for_each(|x| *x = F::ZERO));
    }
}

impl<F: Float> ParamStore<[F]> for Params<F> {
    fn values(&self) -> Vec<&[F]> {
        self.values.iter().map(|v| &v[..]).collect()
    }
    fn split(&mut self) -> (Vec<&[F]>, Vec<&mut [F]>) {
        (
            self.values.iter().map(|v| &v[..]).collect(),
            self.grads.iter_mut().map(|g| &mut g[..]).collect(),
        )
    }
}
