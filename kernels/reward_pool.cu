// Reward-head pooling: the GPU twin of src/reward/pool.rs (its reference; the parity
// harness in tests/gpu_parity.rs compares the two on the same buffers).
//
// Inputs are row-major: hidden [B, S, H] (float32), mask [B, S] (int64, nonzero = a real
// token, either padding side), head weight [L, H] and bias [L].
//
// - pool_last_token_head: each row's hidden vector at its last real token, times the head:
//   out [B, L]. A row with no real token gets status 1 and zeros.
// - pool_masked_mean: the mean of each row's hidden vectors over its real tokens: out [B, H]
//   (zeros for an empty row, as the CPU does).
// - pool_head: out [B, L] = pooled [B, H] x weight^T + bias (after pool_masked_mean).
// - pool_cosine: out [B] = cos(a_b, b_b) for rows of [B, H] (0 when either is zero).
//
// One block per row; threads stride over the hidden dimension (coalesced). Sums run in a
// fixed order, so results are the same on every run.
//
// Compiled at run time by NVRTC (no headers), see src/gpu/.

#define POOL_THREADS 256
#define POOL_WARPS (POOL_THREADS / 32)

__device__ float pool_block_sum(float v, float* scratch) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < POOL_WARPS ? scratch[lane] : 0.0f;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ int pool_block_max(int v, int* scratch) {
    for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, o));
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < POOL_WARPS ? scratch[lane] : -1;
    for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

extern "C" __global__ void __launch_bounds__(POOL_THREADS)
pool_last_token_head(const float* __restrict__ hidden, const long long* __restrict__ mask,
                     int seq, int dim, const float* __restrict__ weight,
                     const float* __restrict__ bias, int labels, float* __restrict__ out,
                     int* __restrict__ status) {
    __shared__ float fscratch[POOL_WARPS];
    __shared__ int iscratch[POOL_WARPS];
    const int b = blockIdx.x;
    const long long* m = mask + (size_t)b * seq;
    int last = -1;
    for (int t = threadIdx.x; t < seq; t += POOL_THREADS)
        if (m[t] != 0) last = max(last, t);
    last = pool_block_max(last, iscratch);
    if (last < 0) {
        for (int l = threadIdx.x; l < labels; l += POOL_THREADS) out[(size_t)b * labels + l] = 0.0f;
        if (threadIdx.x == 0) status[b] = 1;
        return;
    }
    const float* x = hidden + ((size_t)b * seq + last) * dim;
    for (int l = 0; l < labels; ++l) {
        const float* w = weight + (size_t)l * dim;
        float part = 0.0f;
        for (int h = threadIdx.x; h < dim; h += POOL_THREADS) part += w[h] * x[h];
        float dot = pool_block_sum(part, fscratch);
        if (threadIdx.x == 0) out[(size_t)b * labels + l] = dot + bias[l];
    }
    if (threadIdx.x == 0) status[b] = 0;
}

extern "C" __global__ void __launch_bounds__(POOL_THREADS)
pool_masked_mean(const float* __restrict__ hidden, const long long* __restrict__ mask,
                 int seq, int dim, float* __restrict__ out) {
    const int b = blockIdx.x;
    const long long* m = mask + (size_t)b * seq;
    int count = 0;
    for (int t = 0; t < seq; ++t) count += m[t] != 0;
    const float inv = count > 0 ? 1.0f / (float)count : 0.0f;
    for (int h = threadIdx.x; h < dim; h += POOL_THREADS) {
        float sum = 0.0f;
        for (int t = 0; t < seq; ++t)
            if (m[t] != 0) sum += hidden[((size_t)b * seq + t) * dim + h];
        out[(size_t)b * dim + h] = count > 0 ? sum * inv : 0.0f;
    }
}

extern "C" __global__ void __launch_bounds__(POOL_THREADS)
pool_head(const float* __restrict__ pooled, int dim, const float* __restrict__ weight,
          const float* __restrict__ bias, int labels, float* __restrict__ out) {
    __shared__ float fscratch[POOL_WARPS];
    const int b = blockIdx.x;
    const float* x = pooled + (size_t)b * dim;
    for (int l = 0; l < labels; ++l) {
        const float* w = weight + (size_t)l * dim;
        float part = 0.0f;
        for (int h = threadIdx.x; h < dim; h += POOL_THREADS) part += w[h] * x[h];
        float dot = pool_block_sum(part, fscratch);
        if (threadIdx.x == 0) out[(size_t)b * labels + l] = dot + bias[l];
    }
}

extern "C" __global__ void __launch_bounds__(POOL_THREADS)
pool_cosine(const float* __restrict__ a, const float* __restrict__ bvec, int dim,
            float* __restrict__ out) {
    __shared__ float fscratch[POOL_WARPS];
    const int b = blockIdx.x;
    const float* x = a + (size_t)b * dim;
    const float* y = bvec + (size_t)b * dim;
    float xy = 0.0f, xx = 0.0f, yy = 0.0f;
    for (int h = threadIdx.x; h < dim; h += POOL_THREADS) {
        xy += x[h] * y[h];
        xx += x[h] * x[h];
        yy += y[h] * y[h];
    }
    xy = pool_block_sum(xy, fscratch);
    xx = pool_block_sum(xx, fscratch);
    yy = pool_block_sum(yy, fscratch);
    if (threadIdx.x == 0) {
        float nx = sqrtf(xx), ny = sqrtf(yy);
        out[b] = (nx == 0.0f || ny == 0.0f) ? 0.0f : xy / (nx * ny);
    }
}
