//! Launching `kernels/reward_pool.cu`: last-token gather + head, masked mean, head, cosine.
//! Same inputs and outputs as the CPU reference in `reward::pool` (host buffers in, host
//! results out; the parity harness compares the two), and the last-token head over hidden
//! states already on the device (a reward graph's output bound to device memory), where only
//! the masks go up and `[B, labels]` comes back.
//!
//! Host hidden states come in as this room's own [`HiddenStates`] view (the reward room
//! converts its `Hidden` to it). Timing the kernels is the benchmark's business
//! (`bench::kernels`), over the `upload_*` and `enqueue_*` halves of each call.

use cudarc::driver::{CudaFunction, CudaSlice, LaunchConfig, PushKernelArg};

use super::{GpuDevice, GpuError, REWARD_POOL};

/// Host hidden states `[rows, seq, dim]`, float32, row-major, with one `[seq]` mask per row
/// passed beside them (non-zero = a real token).
#[derive(Debug, Clone, Copy)]
pub struct HiddenStates<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub seq: usize,
    pub dim: usize,
}

impl<'a> HiddenStates<'a> {
    /// Checks that `data` holds exactly `rows * seq * dim` values.
    pub fn new(data: &'a [f32], rows: usize, seq: usize, dim: usize) -> Option<Self> {
        (rows.checked_mul(seq)?.checked_mul(dim)? == data.len()).then_some(Self {
            data,
            rows,
            seq,
            dim,
        })
    }

    /// Checks that `masks` has one mask per row, each `seq` long.
    fn check_masks(&self, masks: &[&[i64]]) -> Result<(), GpuError> {
        if masks.len() != self.rows {
            return Err(GpuError::Input(format!(
                "the output has {} rows but the batch has {}",
                self.rows,
                masks.len()
            )));
        }
        match masks.iter().find(|m| m.len() != self.seq) {
            Some(m) => Err(GpuError::Input(format!(
                "the output has {} positions per row but the input has {}",
                self.seq,
                m.len()
            ))),
            None => Ok(()),
        }
    }
}

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
/// [`DeviceHead`]): what [`GpuPool::upload_last_token`] returns.
pub struct LastTokenInputs {
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

/// `pool_masked_mean`'s inputs and output on the device: what
/// [`GpuPool::upload_masked_mean`] returns.
pub struct MaskedMeanInputs {
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

    fn flat_masks(hidden: &HiddenStates<'_>, masks: &[&[i64]]) -> Result<Vec<i64>, GpuError> {
        hidden.check_masks(masks)?;
        Ok(masks.iter().flat_map(|m| m.iter().copied()).collect())
    }

    /// `head · hidden[last real token] + bias` per row (`[labels]`), `None` for a row with
    /// no real token (reference: `reward::pool::last_token` then `reward::pool::head_dot`).
    pub fn last_token_head(
        &self,
        hidden: &HiddenStates<'_>,
        masks: &[&[i64]],
        weight: &[f32],
        bias: &[f32],
        labels: usize,
    ) -> Result<Vec<Option<Vec<f32>>>, GpuError> {
        if hidden.rows == 0 {
            check_head(weight, bias, labels, hidden.dim)?;
            Self::flat_masks(hidden, masks)?;
            return Ok(Vec::new());
        }
        let head = self.upload_head(weight, bias, labels, hidden.dim)?;
        let mut x = self.upload_last_token(hidden, masks, labels)?;
        self.enqueue_last_token(&mut x, &head)?;
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
        self.enqueue_last_token(&mut x, head)?;
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
    /// `reward::pool::masked_mean`).
    pub fn masked_mean(
        &self,
        hidden: &HiddenStates<'_>,
        masks: &[&[i64]],
    ) -> Result<Vec<Vec<f32>>, GpuError> {
        if hidden.rows == 0 {
            Self::flat_masks(hidden, masks)?;
            return Ok(Vec::new());
        }
        let mut x = self.upload_masked_mean(hidden, masks)?;
        self.enqueue_masked_mean(&mut x)?;
        let out = self.device.stream().clone_dtoh(&x.out)?;
        Ok(out.chunks(hidden.dim.max(1)).map(<[f32]>::to_vec).collect())
    }

    /// The hidden states and masks uploaded from the host (the head comes separately): the
    /// inputs of [`Self::enqueue_last_token`].
    pub fn upload_last_token(
        &self,
        hidden: &HiddenStates<'_>,
        masks: &[&[i64]],
        labels: usize,
    ) -> Result<LastTokenInputs, GpuError> {
        let mask = Self::flat_masks(hidden, masks)?;
        let s = self.device.stream();
        let uploaded = s.clone_htod(hidden.data)?;
        // The guard only records stream events; everything here runs on `s`.
        let ptr = cudarc::driver::DevicePtr::device_ptr(&uploaded, s).0;
        Ok(LastTokenInputs {
            rows: hidden.rows,
            seq: int("seq", hidden.seq)?,
            dim: int("hidden", hidden.dim)?,
            hidden: ptr,
            mask: s.clone_htod(&mask)?,
            out: s.alloc_zeros::<f32>(hidden.rows * labels)?,
            status: s.alloc_zeros::<i32>(hidden.rows)?,
            _uploaded: Some(uploaded),
        })
    }

    /// One `pool_last_token_head` launch over `x` with `head`, queued on this device's stream
    /// and not waited for (the results stay in `x` on the device).
    pub fn enqueue_last_token(
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

    /// The hidden states and masks uploaded from the host: the inputs of
    /// [`Self::enqueue_masked_mean`].
    pub fn upload_masked_mean(
        &self,
        hidden: &HiddenStates<'_>,
        masks: &[&[i64]],
    ) -> Result<MaskedMeanInputs, GpuError> {
        let mask = Self::flat_masks(hidden, masks)?;
        let s = self.device.stream();
        Ok(MaskedMeanInputs {
            rows: hidden.rows,
            seq: int("seq", hidden.seq)?,
            dim: int("hidden", hidden.dim)?,
            hidden: s.clone_htod(hidden.data)?,
            mask: s.clone_htod(&mask)?,
            out: s.alloc_zeros::<f32>(hidden.rows * hidden.dim)?,
        })
    }

    /// One `pool_masked_mean` launch over `x`, queued and not waited for.
    pub fn enqueue_masked_mean(&self, x: &mut MaskedMeanInputs) -> Result<(), GpuError> {
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
    /// `reward::pool::cosine`).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_states_must_fill_their_shape() {
        assert!(HiddenStates::new(&[0.0; 6], 2, 3, 1).is_some());
        assert!(HiddenStates::new(&[0.0; 5], 2, 3, 1).is_none());
        assert!(HiddenStates::new(&[], usize::MAX, 2, 1).is_none());
    }

    #[test]
    fn masks_must_be_one_per_row_of_the_sequence_length() {
        let data = [0.0; 12];
        let h = HiddenStates::new(&data, 2, 3, 2).unwrap();
        assert!(h.check_masks(&[&[1, 1, 0], &[0, 1, 1]]).is_ok());
        let longer: &[i64] = &[1, 1, 1, 1];
        let err = h
            .check_masks(&[&[1, 1, 0], longer])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("3 positions per row but the input has 4"),
            "{err}"
        );
        let err = h.check_masks(&[&[1, 1, 0]]).unwrap_err().to_string();
        assert!(err.contains("2 rows but the batch has 1"), "{err}");
    }

    #[test]
    fn heads_and_masks_of_the_wrong_size_are_refused() {
        assert!(check_head(&[0.0; 6], &[0.0; 2], 2, 3).is_ok());
        assert!(check_head(&[0.0; 5], &[0.0; 2], 2, 3).is_err());
        assert!(check_head(&[], &[], 0, 3).is_err());
        assert_eq!(
            flat_masks_of(2, 2, &[&[1, 0], &[0, 1]]).unwrap(),
            [1, 0, 0, 1]
        );
        assert!(flat_masks_of(2, 2, &[&[1, 0]]).is_err());
    }
}
