//! Launching `kernels/reward_pool.cu`: last-token gather + head, masked mean, head, cosine.
//! Same inputs and outputs as the CPU reference in `reward::pool` (host buffers in, host
//! results out here; the parity harness compares the two).

use cudarc::driver::{CudaFunction, LaunchConfig, PushKernelArg};

use super::{GpuDevice, GpuError, REWARD_POOL};
use crate::reward::pool::Hidden;

/// Threads per block: must equal `POOL_THREADS` in `kernels/reward_pool.cu`.
const THREADS: u32 = 256;

/// The pooling kernels, loaded on one device.
pub struct GpuPool<'d> {
    device: &'d GpuDevice,
    last_token_head: CudaFunction,
    masked_mean: CudaFunction,
    head: CudaFunction,
    cosine: CudaFunction,
}

fn int(name: &str, v: usize) -> Result<i32, GpuError> {
    i32::try_from(v).map_err(|_| GpuError::Input(format!("{name} = {v} exceeds i32")))
}

fn grid(rows: usize) -> Result<LaunchConfig, GpuError> {
    let rows =
        u32::try_from(rows).map_err(|_| GpuError::Input(format!("{rows} rows exceed a grid")))?;
    Ok(LaunchConfig {
        grid_dim: (rows, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    })
}

fn check_head(weight: &[f32], bias: &[f32], labels: usize, dim: usize) -> Result<(), GpuError> {
    if labels == 0 || weight.len() != labels * dim || bias.len() != labels {
        return Err(GpuError::Input(format!(
            "a head of {labels} labels over {dim} needs {} weights and {labels} biases, got {} and {}",
            labels * dim,
            weight.len(),
            bias.len()
        )));
    }
    Ok(())
}

impl<'d> GpuPool<'d> {
    pub fn new(device: &'d GpuDevice) -> Result<Self, GpuError> {
        let module = device.load(&REWARD_POOL)?;
        Ok(Self {
            device,
            last_token_head: module.load_function("pool_last_token_head")?,
            masked_mean: module.load_function("pool_masked_mean")?,
            head: module.load_function("pool_head")?,
            cosine: module.load_function("pool_cosine")?,
        })
    }

    fn flat_masks(hidden: &Hidden<'_>, masks: &[&[i64]]) -> Result<Vec<i64>, GpuError> {
        hidden.check_masks(masks).map_err(GpuError::Input)?;
        Ok(masks.iter().flat_map(|m| m.iter().copied()).collect())
    }

    /// `head · hidden[last real token] + bias` per row (`[labels]`), `None` for a row with
    /// no real token (reference: `pool::last_token` then `pool::head_dot`).
    pub fn last_token_head(
        &self,
        hidden: &Hidden<'_>,
        masks: &[&[i64]],
        weight: &[f32],
        bias: &[f32],
        labels: usize,
    ) -> Result<Vec<Option<Vec<f32>>>, GpuError> {
        check_head(weight, bias, labels, hidden.hidden)?;
        let mask = Self::flat_masks(hidden, masks)?;
        if hidden.batch == 0 {
            return Ok(Vec::new());
        }
        let s = self.device.stream();
        let h = s.clone_htod(hidden.data)?;
        let m = s.clone_htod(&mask)?;
        let w = s.clone_htod(weight)?;
        let bi = s.clone_htod(bias)?;
        let mut out = s.alloc_zeros::<f32>(hidden.batch * labels)?;
        let mut status = s.alloc_zeros::<i32>(hidden.batch)?;
        let (seq, dim, lab) = (
            int("seq", hidden.seq)?,
            int("hidden", hidden.hidden)?,
            int("labels", labels)?,
        );
        let mut launch = s.launch_builder(&self.last_token_head);
        launch
            .arg(&h)
            .arg(&m)
            .arg(&seq)
            .arg(&dim)
            .arg(&w)
            .arg(&bi)
            .arg(&lab)
            .arg(&mut out)
            .arg(&mut status);
        // SAFETY: arguments match `pool_last_token_head` in kernels/reward_pool.cu; every
        // buffer has the size the kernel indexes (checked above); block size = POOL_THREADS.
        unsafe { launch.launch(grid(hidden.batch)?) }?;
        let out = s.clone_dtoh(&out)?;
        let status = s.clone_dtoh(&status)?;
        Ok(out
            .chunks(labels)
            .zip(status)
            .map(|(row, st)| (st == 0).then(|| row.to_vec()))
            .collect())
    }

    /// Mean of each row's hidden vectors over its real tokens (reference:
    /// `pool::masked_mean`).
    pub fn masked_mean(
        &self,
        hidden: &Hidden<'_>,
        masks: &[&[i64]],
    ) -> Result<Vec<Vec<f32>>, GpuError> {
        let mask = Self::flat_masks(hidden, masks)?;
        if hidden.batch == 0 {
            return Ok(Vec::new());
        }
        let s = self.device.stream();
        let h = s.clone_htod(hidden.data)?;
        let m = s.clone_htod(&mask)?;
        let mut out = s.alloc_zeros::<f32>(hidden.batch * hidden.hidden)?;
        let (seq, dim) = (int("seq", hidden.seq)?, int("hidden", hidden.hidden)?);
        let mut launch = s.launch_builder(&self.masked_mean);
        launch.arg(&h).arg(&m).arg(&seq).arg(&dim).arg(&mut out);
        // SAFETY: arguments match `pool_masked_mean`; sizes checked above.
        unsafe { launch.launch(grid(hidden.batch)?) }?;
        let out = s.clone_dtoh(&out)?;
        Ok(out
            .chunks(hidden.hidden.max(1))
            .map(<[f32]>::to_vec)
            .collect())
    }

    /// `weight · x + bias` for each row `x` of `pooled` (`[rows, dim]`): `[rows][labels]`.
    pub fn head(
        &self,
        pooled: &[f32],
        dim: usize,
        weight: &[f32],
        bias: &[f32],
        labels: usize,
    ) -> Result<Vec<Vec<f32>>, GpuError> {
        check_head(weight, bias, labels, dim)?;
        if dim == 0 || pooled.len() % dim != 0 {
            return Err(GpuError::Input(format!(
                "{} pooled values are not rows of {dim}",
                pooled.len()
            )));
        }
        let rows = pooled.len() / dim;
        if rows == 0 {
            return Ok(Vec::new());
        }
        let s = self.device.stream();
        let x = s.clone_htod(pooled)?;
        let w = s.clone_htod(weight)?;
        let bi = s.clone_htod(bias)?;
        let mut out = s.alloc_zeros::<f32>(rows * labels)?;
        let (d, lab) = (int("dim", dim)?, int("labels", labels)?);
        let mut launch = s.launch_builder(&self.head);
        launch
            .arg(&x)
            .arg(&d)
            .arg(&w)
            .arg(&bi)
            .arg(&lab)
            .arg(&mut out);
        // SAFETY: arguments match `pool_head`; sizes checked above.
        unsafe { launch.launch(grid(rows)?) }?;
        Ok(s.clone_dtoh(&out)?
            .chunks(labels)
            .map(<[f32]>::to_vec)
            .collect())
    }

    /// Cosine of each pair of rows of `a` and `b` (`[rows, dim]` each; reference:
    /// `pool::cosine`).
    pub fn cosine(&self, a: &[f32], b: &[f32], dim: usize) -> Result<Vec<f32>, GpuError> {
        if dim == 0 || a.len() != b.len() || a.len() % dim != 0 {
            return Err(GpuError::Input(format!(
                "cosine needs two [rows, {dim}] buffers, got {} and {} values",
                a.len(),
                b.len()
            )));
        }
        let rows = a.len() / dim;
        if rows == 0 {
            return Ok(Vec::new());
        }
        let s = self.device.stream();
        let x = s.clone_htod(a)?;
        let y = s.clone_htod(b)?;
        let mut out = s.alloc_zeros::<f32>(rows)?;
        let d = int("dim", dim)?;
        let mut launch = s.launch_builder(&self.cosine);
        launch.arg(&x).arg(&y).arg(&d).arg(&mut out);
        // SAFETY: arguments match `pool_cosine`; sizes checked above.
        unsafe { launch.launch(grid(rows)?) }?;
        Ok(s.clone_dtoh(&out)?)
    }
}
