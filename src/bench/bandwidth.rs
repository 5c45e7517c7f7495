//! The physical limit of batch-1 decode: every generated token reads all the weights once,
//! so tokens/s can be at most (memory read bandwidth) ÷ (weight bytes read per token).
//!
//! [`measure_read_bandwidth`] sums a buffer far larger than the caches with `threads`
//! threads (each summing its own contiguous part, 8 independent accumulators so the loads,
//! not the adds, are the limit) and keeps the best of a few passes: the ceiling is what the
//! machine can do, not what it did on a noisy pass.

use std::time::Instant;

/// Bytes of the buffer summed: 1 GiB, well beyond any last-level cache.
const BUFFER_BYTES: usize = 1 << 30;

/// Read bandwidth in bytes/s: the best of `passes` passes over a 1 GiB buffer.
pub fn measure_read_bandwidth(threads: usize, passes: usize) -> f64 {
    let threads = threads.max(1);
    let words = BUFFER_BYTES / 8;
    let buffer: Vec<u64> = (0..words as u64).collect();
    let chunk = words.div_ceil(threads);
    let mut best = 0.0f64;
    for _ in 0..passes.max(1) {
        let started = Instant::now();
        let total: u64 = std::thread::scope(|s| {
            let handles: Vec<_> = buffer
                .chunks(chunk)
                .map(|part| s.spawn(move || sum(part)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or(0))
                .fold(0u64, u64::wrapping_add)
        });
        let seconds = started.elapsed().as_secs_f64();
        std::hint::black_box(total);
        best = best.max(BUFFER_BYTES as f64 / seconds);
    }
    best
}

/// The sum of `part` with eight independent accumulators.
fn sum(part: &[u64]) -> u64 {
    let mut acc = [0u64; 8];
    let mut blocks = part.chunks_exact(8);
    for block in &mut blocks {
        for (a, &x) in acc.iter_mut().zip(block) {
            *a = a.wrapping_add(x);
        }
    }
    let tail = blocks
        .remainder()
        .iter()
        .fold(0u64, |a, &x| a.wrapping_add(x));
    acc.iter().fold(tail, |a, &x| a.wrapping_add(x))
}

/// The batch-1 decode ceiling in tokens/s for `weight_bytes` read per token.
pub fn decode_ceiling(bandwidth_bytes_per_s: f64, weight_bytes: u64) -> Option<f64> {
    (weight_bytes > 0 && bandwidth_bytes_per_s > 0.0)
        .then(|| bandwidth_bytes_per_s / weight_bytes as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sum_matches_the_plain_sum_with_a_tail() {
        let v: Vec<u64> = (0..1003).collect();
        assert_eq!(sum(&v), v.iter().sum::<u64>());
    }

    #[test]
    fn ceiling_is_bandwidth_over_bytes() {
        assert_eq!(decode_ceiling(40e9, 500_000_000), Some(80.0));
        assert_eq!(decode_ceiling(40e9, 0), None);
    }
}
