//! Launching `kernels/reward_pool.cu`: last-token gather + head, masked mean, head, cosine.
//! Same inputs and outputs as the CPU reference in `reward::pool` (host buffers in, host
//! results out; the parity harness compares the two), and the last-token head over hidden
//! states already on the device (a reward graph's output bound to device memory), where only
//! the masks go up and `[B, labels]` comes back.

use cudarc::driver::{CudaFunction, CudaSlice, LaunchConfig, PushKernelArg};

use super::{GpuDevice, GpuError, REWARD_POOL};
use crate::reward::pool::Hidden;

/// Threads per block: must equal `POOL_THREADS` in `kernels/reward_pool.cu`.
const THREADS: u32 = 256;

/// A classification head (`[labels, dim]` weights and `[labels]` biases) on the device.
pub struct DeviceHead {
    labels: usize,
    dim: usize,
    weight: CudaSlice<f32>,
    bias: CudaSlice<f32>,
}

impl DeviceHead {
    pub fn labels(&self) -> usize {
        self.labels
    }

    pub fn dim(&self) -> usize {
        self.dim
    }
}

/// `pool_last_token_head`'s per-batch inputs and outputs on the device (the head is a
/// [`DeviceHead`]).
struct LastTokenInputs {
    rows: usize,
    seq: i32,
    dim: i32,
    /// Device address of the hidden states `[rows, seq, dim]`.
    hidden: u64,
    /// The hidden states when they were uploaded from the host (keeps `hidden` valid).
    _uploaded: Option<CudaSlice<f32>>,
    mask: CudaSlice<i64>,
    out: CudaSlice<f32>,
    status: CudaSlice<i32>,
}

/// `pool_masked_mean`'s inputs and output on the device.
struct MaskedMeanInputs {
    rows: usize,
    seq: i32,
    dim: i32,
    hidden: CudaSlice<f32>,
    mask: CudaSlice<i64>,
    out: CudaSlice<f32>,
}

/// The pooling kernels, loaded on one device.
pub struct GpuPool {
    device: GpuDevice,
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

/// One mask per row, each `seq` long, flattened (what the kernels read).
fn flat_masks_of(rows: usize, seq: usize, masks: &[&[i64]]) -> Result<Vec<i64>, GpuError> {
    if masks.len() != rows || masks.iter().any(|m| m.len() != seq) {
        return Err(GpuError::Input(format!(
            "{rows} rows of {seq} positions need {rows} masks of {seq}, got {} masks of {:?}",
            masks.len(),
            masks.iter().map(|m| m.len()).collect::<Vec<_>>()
        )));
    }
    Ok(masks.iter().flat_map(|m| m.iter().copied()).collect())
}

impl GpuPool {
    pub fn new(device: &GpuDevice) -> Result<Self, GpuError> {
        let module = device.load(&REWARD_POOL)?;
        Ok(Self {
            device: device.clone(),
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
        if hidden.batch == 0 {
            check_head(weight, bias, labels, hidden.hidden)?;
            Self::flat_masks(hidden, masks)?;
            return Ok(Vec::new());
        }
        let head = self.upload_head(weight, bias, labels, hidden.hidden)?;
        let mut x = self.upload_last_token(hidden, masks, labels)?;
        self.launch_last_token(&mut x, &head)?;
        self.read_last_token(&x, &head)
    }

    /// Uploads a head of `labels` rows over `dim` (weights row-major `[labels, dim]`).
    pub fn upload_head(
        &self,
        weight: &[f32],
        bias: &[f32],
        labels: usize,
        dim: usize,
    ) -> Result<DeviceHead, GpuError> {
        check_head(weight, bias, labels, dim)?;
        let s = self.device.stream();
        Ok(DeviceHead {
            labels,
            dim,
            weight: s.clone_htod(weight)?,
            bias: s.clone_htod(bias)?,
        })
    }

    /// As [`Self::last_token_head`], over hidden states `[masks.len(), seq, head.dim()]`
    /// already on this device at `hidden`: only the masks go up, `[rows, labels]` comes back.
    ///
    /// # Safety
    /// `hidden` must address `masks.len() * seq * head.dim()` float32s on this device, fully
    /// written by work that has completed (or is ordered before this device's stream), and
    /// not written by anything until this returns.
    pub unsafe fn last_token_head_device(
        &self,
        hidden: u64,
        seq: usize,
        masks: &[&[i64]],
        head: &DeviceHead,
    ) -> Result<Vec<Option<Vec<f32>>>, GpuError> {
        let rows = masks.len();
        let mask = flat_masks_of(rows, seq, masks)?;
        if rows == 0 {
            return Ok(Vec::new());
        }
        let s = self.device.stream();
        let mut x = LastTokenInputs {
            rows,
            seq: int("seq", seq)?,
            dim: int("hidden", head.dim)?,
            hidden,
            _uploaded: None,
            mask: s.clone_htod(&mask)?,
            out: s.alloc_zeros::<f32>(rows * head.labels)?,
            status: s.alloc_zeros::<i32>(rows)?,
        };
        self.launch_last_token(&mut x, head)?;
        self.read_last_token(&x, head)
    }

    fn read_last_token(
        &self,
        x: &LastTokenInputs,
        head: &DeviceHead,
    ) -> Result<Vec<Option<Vec<f32>>>, GpuError> {
        let s = self.device.stream();
        let out = s.clone_dtoh(&x.out)?;
        let status = s.clone_dtoh(&x.status)?;
        Ok(out
            .chunks(head.labels)
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
        if hidden.batch == 0 {
            Self::flat_masks(hidden, masks)?;
            return Ok(Vec::new());
        }
        let mut x = self.upload_masked_mean(hidden, masks)?;
        self.launch_masked_mean(&mut x)?;
        let out = self.device.stream().clone_dtoh(&x.out)?;
        Ok(out
            .chunks(hidden.hidden.max(1))
            .map(<[f32]>::to_vec)
            .collect())
    }

    /// Wall time of `launches` back-to-back `pool_last_token_head` launches over inputs
    /// uploaded once (nothing read back): the kernel's own cost for `tpo bench kernels`.
    pub fn time_last_token_head(
        &self,
        hidden: &Hidden<'_>,
        masks: &[&[i64]],
        weight: &[f32],
        bias: &[f32],
        labels: usize,
        launches: usize,
    ) -> Result<std::time::Duration, GpuError> {
        let head = self.upload_head(weight, bias, labels, hidden.hidden)?;
        let mut x = self.upload_last_token(hidden, masks, labels)?;
        super::throughput::time_repeated(self.device.stream(), launches, || {
            self.launch_last_token(&mut x, &head)
        })
    }

    /// As [`Self::time_last_token_head`], for `pool_masked_mean`.
    pub fn time_masked_mean(
        &self,
        hidden: &Hidden<'_>,
        masks: &[&[i64]],
        launches: usize,
    ) -> Result<std::time::Duration, GpuError> {
        let mut x = self.upload_masked_mean(hidden, masks)?;
        super::throughput::time_repeated(self.device.stream(), launches, || {
            self.launch_masked_mean(&mut x)
        })
    }

    /// The hidden states and masks uploaded from the host (the head comes separately).
    fn upload_last_token(
        &self,
        hidden: &Hidden<'_>,
        masks: &[&[i64]],
        labels: usize,
    ) -> Result<LastTokenInputs, GpuError> {
        let mask = Self::flat_masks(hidden, masks)?;
        let s = self.device.stream();
        let uploaded = s.clone_htod(hidden.data)?;
        // The guard only records stream events; everything here runs on `s`.
        let ptr = cudarc::driver::DevicePtr::device_ptr(&uploaded, s).0;
        Ok(LastTokenInputs {
            rows: hidden.batch,
            seq: int("seq", hidden.seq)?,
            dim: int("hidden", hidden.hidden)?,
            hidden: ptr,
            mask: s.clone_htod(&mask)?,
            out: s.alloc_zeros::<f32>(hidden.batch * labels)?,
            status: s.alloc_zeros::<i32>(hidden.batch)?,
            _uploaded: Some(uploaded),
        })
    }

    fn launch_last_token(
        &self,
        x: &mut LastTokenInputs,
        head: &DeviceHead,
    ) -> Result<(), GpuError> {
        if x.dim != int("hidden", head.dim)? {
            return Err(GpuError::Input(format!(
                "a head over {} applied to hidden states of {}",
                head.dim, x.dim
            )));
        }
        let labels = int("labels", head.labels)?;
        let mut launch = self.device.stream().launch_builder(&self.last_token_head);
        launch
            .arg(&x.hidden)
            .arg(&x.mask)
            .arg(&x.seq)
            .arg(&x.dim)
            .arg(&head.weight)
            .arg(&head.bias)
            .arg(&labels)
            .arg(&mut x.out)
            .arg(&mut x.status);
        // SAFETY: arguments match `pool_last_token_head` in kernels/reward_pool.cu; `hidden`
        // addresses rows * seq * dim float32s (uploaded here, or the caller's guarantee in
        // `last_token_head_device`), the mask rows * seq, the head labels * dim and labels
        // (checked when uploaded; its dim matches, checked above), out rows * labels and
        // status rows; block size = POOL_THREADS.
        unsafe { launch.launch(grid(x.rows)?) }?;
        Ok(())
    }

    fn upload_masked_mean(
        &self,
        hidden: &Hidden<'_>,
        masks: &[&[i64]],
    ) -> Result<MaskedMeanInputs, GpuError> {
        let mask = Self::flat_masks(hidden, masks)?;
        let s = self.device.stream();
        Ok(MaskedMeanInputs {
            rows: hidden.batch,
            seq: int("seq", hidden.seq)?,
            dim: int("hidden", hidden.hidden)?,
            hidden: s.clone_htod(hidden.data)?,
            mask: s.clone_htod(&mask)?,
            out: s.alloc_zeros::<f32>(hidden.batch * hidden.hidden)?,
        })
    }

    fn launch_masked_mean(&self, x: &mut MaskedMeanInputs) -> Result<(), GpuError> {
        let mut launch = self.device.stream().launch_builder(&self.masked_mean);
        launch
            .arg(&x.hidden)
            .arg(&x.mask)
            .arg(&x.seq)
            .arg(&x.dim)
            .arg(&mut x.out);
        // SAFETY: arguments match `pool_masked_mean`; sizes checked in `upload_masked_mean`.
        unsafe { launch.launch(grid(x.rows)?) }?;
        Ok(())
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
