// Batched sampling of one token per row of logits: the GPU twin of the CPU sampler in
// src/engine/sampler/ (its reference; the parity harness in tests/gpu_parity.rs compares the
// two on the same rows and uniforms).
//
// One launch per step: grid = one block per row, THREADS threads per block. Per row:
//   1. check the row (a NaN or +inf logit, or a row that is all -inf, is a status code) and
//      find the maximum and the argmax (lowest id on ties);
//   2. the log-sum-exp at temperature 1, for the model's own log-prob of the chosen token;
//   3. greedy: the argmax. Untruncated (top_p = 1, no top-k, no min-p): the inverse CDF
//      walked in token order, as the CPU does. Truncated: the nucleus in descending logit
//      order (ties by lower id, as the CPU's sort) found WITHOUT sorting, by radix select over
//      order-preserving keys of the logits, then the draw inside it with the row's uniform.
//
// Probability mass is summed in 40-bit fixed point with 64-bit integer adds, which are exact
// and associative: the result does not depend on thread scheduling, so a seeded request gives
// the same token on every run. (Weights are exp((l - max) / t) <= 1 and a row has < 2^23
// entries, so the sums stay below 2^63.)
//
// Compiled at run time by NVRTC (no headers), see src/gpu/.

#define THREADS 1024
#define WARPS (THREADS / 32)
#define RADIX_BITS 8
#define RADIX 256

// Row status, read back by the host (src/gpu/sampler.rs maps them to LogitsError).
#define STATUS_OK 0
#define STATUS_NAN 1
#define STATUS_POS_INF 2
#define STATUS_ALL_NEG_INF 3

typedef unsigned long long u64;

__device__ __forceinline__ u64 to_fixed(float w) {
    // 2^40: weights in [0, 1] become integers in [0, 2^40].
    return (u64)__float2ull_rn(w * 1099511627776.0f);
}

// Order-preserving key: a > b as floats (total order, -0 < +0) iff key(a) > key(b).
__device__ __forceinline__ unsigned int order_key(float x) {
    unsigned int b = __float_as_uint(x);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

__device__ __forceinline__ float weight_of(float l, float max, float inv_t) {
    return l == -__int_as_float(0x7f800000) ? 0.0f : expf((l - max) * inv_t);
}

// ---- block-wide reductions (every thread gets the result) -----------------------------

__device__ float block_sum_f(float v, float* scratch) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < WARPS ? scratch[lane] : 0.0f;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ u64 block_sum_u64(u64 v, u64* scratch) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < WARPS ? scratch[lane] : 0ull;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ int block_min_i(int v, int* scratch) {
    for (int o = 16; o > 0; o >>= 1) v = min(v, __shfl_xor_sync(0xffffffffu, v, o));
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < WARPS ? scratch[lane] : 0x7fffffff;
    for (int o = 16; o > 0; o >>= 1) v = min(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

__device__ int block_max_i(int v, int* scratch) {
    for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, o));
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < WARPS ? scratch[lane] : -1;
    for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Max value with the lowest index among equal values (NaN-free input).
__device__ void block_argmax(float* value, int* index, float* fscratch, int* iscratch) {
    float v = *value;
    int i = *index;
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, v, o);
        int oi = __shfl_xor_sync(0xffffffffu, i, o);
        if (ov > v || (ov == v && oi < i)) { v = ov; i = oi; }
    }
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) { fscratch[warp] = v; iscratch[warp] = i; }
    __syncthreads();
    v = lane < WARPS ? fscratch[lane] : -__int_as_float(0x7f800000);
    i = lane < WARPS ? iscratch[lane] : 0x7fffffff;
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, v, o);
        int oi = __shfl_xor_sync(0xffffffffu, i, o);
        if (ov > v || (ov == v && oi < i)) { v = ov; i = oi; }
    }
    *value = v;
    *index = i;
}

// Exclusive prefix sum over threads, in thread order (deterministic).
__device__ u64 block_exclusive_scan_u64(u64 v, u64* scratch) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    u64 inclusive = v;
    for (int o = 1; o < 32; o <<= 1) {
        u64 n = __shfl_up_sync(0xffffffffu, inclusive, o);
        if (lane >= o) inclusive += n;
    }
    __syncthreads();
    if (lane == 31) scratch[warp] = inclusive;
    __syncthreads();
    if (warp == 0) {
        u64 w = lane < WARPS ? scratch[lane] : 0ull;
        for (int o = 1; o < 32; o <<= 1) {
            u64 n = __shfl_up_sync(0xffffffffu, w, o);
            if (lane >= o) w += n;
        }
        if (lane < WARPS) scratch[lane] = w;  // inclusive sums of warps
    }
    __syncthreads();
    u64 before = warp > 0 ? scratch[warp - 1] : 0ull;
    return before + inclusive - v;
}

struct Shared {
    u64 hist_mass[RADIX];
    unsigned int hist_count[RADIX];
    u64 u64_scratch[WARPS];
    float f_scratch[WARPS];
    int i_scratch[WARPS];
    int i_scratch2[WARPS];
    // Result of a select, written by thread 0.
    unsigned int prefix;
    u64 mass_above;
    unsigned int count_above;
    int found;
};

// Position in the descending order (ties by lower id) found by a select.
struct Cut {
    unsigned int key;        // key of the element at the cut
    u64 mass_above;          // fixed-point mass of elements with a larger key
    unsigned int count_above;// how many elements have a larger key
    unsigned int ties;       // how many elements share the key
};

// Radix select over order keys, restricted to keys >= `floor_key`.
// by_mass: the cut is at the first element (descending) whose inclusive cumulative mass is
// >= target (strict = false) or > target (strict = true); if none is (rounding), the last
// element. Otherwise the cut is at position `target` (0-based) by count.
__device__ Cut radix_select(const float* row, int vocab, float max, float inv_t,
                            bool by_mass, u64 target, bool strict, unsigned int floor_key,
                            Shared* sh) {
    unsigned int prefix = 0, mask = 0;
    u64 mass_above = 0;
    unsigned int count_above = 0;
    unsigned int ties = 0;
    for (int shift = 32 - RADIX_BITS; shift >= 0; shift -= RADIX_BITS) {
        for (int d = threadIdx.x; d < RADIX; d += THREADS) {
            sh->hist_mass[d] = 0ull;
            sh->hist_count[d] = 0u;
        }
        __syncthreads();
        for (int i = threadIdx.x; i < vocab; i += THREADS) {
            float l = row[i];
            unsigned int k = order_key(l);
            if (k >= floor_key && (k & mask) == prefix) {
                int d = (k >> shift) & (RADIX - 1);
                atomicAdd(&sh->hist_count[d], 1u);
                if (by_mass) atomicAdd(&sh->hist_mass[d], to_fixed(weight_of(l, max, inv_t)));
            }
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            int chosen = -1, last_nonempty = -1;
            u64 m = mass_above;
            unsigned int c = count_above;
            for (int d = RADIX - 1; d >= 0; --d) {
                unsigned int cnt = sh->hist_count[d];
                if (cnt == 0) continue;
                last_nonempty = d;
                u64 bin = sh->hist_mass[d];
                bool crosses = by_mass ? (strict ? m + bin > target : m + bin >= target)
                                       : ((u64)c + cnt > target);
                if (crosses) { chosen = d; break; }
                m += bin;
                c += cnt;
            }
            if (chosen < 0) {
                // Nothing crosses: the cut is the last element, in the last nonempty bin.
                chosen = last_nonempty < 0 ? 0 : last_nonempty;
                if (last_nonempty >= 0) {
                    m -= sh->hist_mass[chosen];
                    c -= sh->hist_count[chosen];
                }
                sh->found = 0;
            } else {
                sh->found = 1;
            }
            sh->prefix = prefix | ((unsigned int)chosen << shift);
            sh->mass_above = m;
            sh->count_above = c;
            sh->i_scratch2[0] = (int)sh->hist_count[chosen];
        }
        __syncthreads();
        prefix = sh->prefix;
        mask |= (unsigned int)(RADIX - 1) << shift;
        mass_above = sh->mass_above;
        count_above = sh->count_above;
        ties = (unsigned int)sh->i_scratch2[0];
        __syncthreads();
    }
    Cut cut;
    cut.key = prefix;
    cut.mass_above = mass_above;
    cut.count_above = count_above;
    cut.ties = ties;
    return cut;
}

// The id of the `j`-th (0-based, in id order) element whose key equals `key`.
__device__ int nth_with_key(const float* row, int vocab, unsigned int key, unsigned int j,
                            Shared* sh) {
    int chunk = (vocab + THREADS - 1) / THREADS;
    int lo = min(vocab, (int)threadIdx.x * chunk), hi = min(vocab, lo + chunk);
    u64 mine = 0;
    for (int i = lo; i < hi; ++i) mine += order_key(row[i]) == key;
    u64 before = block_exclusive_scan_u64(mine, sh->u64_scratch);
    int found = 0x7fffffff;
    if (before <= j && j < before + mine) {
        u64 seen = before;
        for (int i = lo; i < hi; ++i) {
            if (order_key(row[i]) == key) {
                if (seen == j) { found = i; break; }
                ++seen;
            }
        }
    }
    return block_min_i(found, sh->i_scratch);
}

// Index of the tie inside a cut that a mass target falls on: the first j with
// mass_above + (j + 1) * w >= target (or > for strict), clamped to the ties.
__device__ unsigned int tie_index(Cut cut, u64 w, u64 target, bool strict) {
    if (w == 0 || cut.ties <= 1) return 0;
    u64 need = target > cut.mass_above ? target - cut.mass_above : 0;
    // smallest n >= 1 with n * w >= need (or > need)
    u64 n = strict ? need / w + 1 : (need + w - 1) / w;
    if (n == 0) n = 1;
    if (n > cut.ties) n = cut.ties;
    return (unsigned int)(n - 1);
}

extern "C" __global__ void __launch_bounds__(THREADS)
sample_rows(const float* __restrict__ logits, int vocab,
            const float* __restrict__ temperature, const float* __restrict__ top_p,
            const float* __restrict__ min_p, const int* __restrict__ top_k,
            const float* __restrict__ uniform,
            int* __restrict__ token_out, float* __restrict__ logprob_out,
            int* __restrict__ status_out) {
    __shared__ Shared sh;
    const int r = blockIdx.x;
    const float* row = logits + (size_t)r * (size_t)vocab;
    const float NEG_INF = -__int_as_float(0x7f800000);
    const float POS_INF = __int_as_float(0x7f800000);

    // 1. Row check, max and argmax.
    float best = NEG_INF;
    int best_i = 0x7fffffff;
    int first_nan = 0x7fffffff, first_inf = 0x7fffffff;
    for (int i = threadIdx.x; i < vocab; i += THREADS) {
        float l = row[i];
        if (l != l) { first_nan = min(first_nan, i); continue; }
        if (l == POS_INF) first_inf = min(first_inf, i);
        if (l > best || (l == best && i < best_i)) { best = l; best_i = i; }
    }
    first_nan = block_min_i(first_nan, sh.i_scratch);
    first_inf = block_min_i(first_inf, sh.i_scratch);
    block_argmax(&best, &best_i, sh.f_scratch, sh.i_scratch);
    if (first_nan != 0x7fffffff || first_inf != 0x7fffffff || best == NEG_INF) {
        if (threadIdx.x == 0) {
            int status = first_nan != 0x7fffffff ? STATUS_NAN
                       : first_inf != 0x7fffffff ? STATUS_POS_INF : STATUS_ALL_NEG_INF;
            status_out[r] = status;
            token_out[r] = first_nan != 0x7fffffff ? first_nan
                         : first_inf != 0x7fffffff ? first_inf : 0;
            logprob_out[r] = 0.0f;
        }
        return;
    }
    const float max = best;

    // 2. Log-sum-exp at temperature 1.
    float part = 0.0f;
    for (int i = threadIdx.x; i < vocab; i += THREADS) part += weight_of(row[i], max, 1.0f);
    const float total_one = block_sum_f(part, sh.f_scratch);

    const float t = temperature[r];
    const float p = top_p[r];
    const float mp = min_p[r];
    const int k = top_k[r];
    const float u = uniform[r];
    int token;

    if (t == 0.0f || k == 1) {
        token = best_i;
    } else {
        const float inv_t = 1.0f / t;
        const bool top_k_limits = k > 0 && k < vocab;
        if (p >= 1.0f && !top_k_limits && mp <= 0.0f) {
            // 3a. Untruncated: inverse CDF in token order over contiguous chunks.
            int chunk = (vocab + THREADS - 1) / THREADS;
            int lo = min(vocab, (int)threadIdx.x * chunk), hi = min(vocab, lo + chunk);
            u64 mine = 0;
            int last_positive = -1;
            for (int i = lo; i < hi; ++i) {
                u64 w = to_fixed(weight_of(row[i], max, inv_t));
                mine += w;
                if (w > 0) last_positive = i;
            }
            u64 before = block_exclusive_scan_u64(mine, sh.u64_scratch);
            u64 total = block_sum_u64(mine, sh.u64_scratch);
            u64 target = (u64)((double)u * (double)total);
            int found = 0x7fffffff;
            if (before <= target && target < before + mine) {
                u64 acc = before;
                for (int i = lo; i < hi; ++i) {
                    acc += to_fixed(weight_of(row[i], max, inv_t));
                    if (acc > target && row[i] > NEG_INF) { found = i; break; }
                }
            }
            found = block_min_i(found, sh.i_scratch);
            int last = block_max_i(last_positive, sh.i_scratch);
            token = found != 0x7fffffff ? found : (last >= 0 ? last : best_i);
        } else {
            // 3b. Truncated nucleus, in descending logit order.
            u64 part_mass = 0;
            for (int i = threadIdx.x; i < vocab; i += THREADS)
                part_mass += to_fixed(weight_of(row[i], max, inv_t));
            const u64 total = block_sum_u64(part_mass, sh.u64_scratch);

            // Nucleus size by top-p: first position whose cumulative mass >= p * total.
            unsigned int kept;
            if (p >= 1.0f) {
                kept = (unsigned int)vocab;
            } else {
                u64 target = (u64)((double)p * (double)total);
                Cut c = radix_select(row, vocab, max, inv_t, true, target, false, 0u, &sh);
                u64 w = to_fixed(weight_of(__uint_as_float(
                    (c.key & 0x80000000u) ? (c.key & 0x7fffffffu) : ~c.key), max, inv_t));
                kept = c.count_above + tie_index(c, w, target, false) + 1;
            }
            if (top_k_limits && (unsigned int)k < kept) kept = (unsigned int)k;
            if (mp > 0.0f) {
                // Sorted descending, the weights fall: min-p keeps those with weight >= min_p.
                u64 cnt = 0;
                for (int i = threadIdx.x; i < vocab; i += THREADS)
                    cnt += weight_of(row[i], max, inv_t) >= mp;
                cnt = block_sum_u64(cnt, sh.u64_scratch);
                if (cnt < kept) kept = (unsigned int)cnt;
            }
            if (kept < 1) kept = 1;

            // The nucleus's last element and its mass.
            Cut edge = radix_select(row, vocab, max, inv_t, false, kept - 1, false, 0u, &sh);
            float edge_logit = __uint_as_float(
                (edge.key & 0x80000000u) ? (edge.key & 0x7fffffffu) : ~edge.key);
            u64 edge_w = to_fixed(weight_of(edge_logit, max, inv_t));
            unsigned int ties_in = kept - edge.count_above;  // ties at the edge inside
            // Mass of the nucleus: everything above the edge key, plus the included ties.
            // (radix_select by count does not sum masses, so sum them here.)
            u64 above = 0;
            for (int i = threadIdx.x; i < vocab; i += THREADS) {
                float l = row[i];
                if (order_key(l) > edge.key) above += to_fixed(weight_of(l, max, inv_t));
            }
            above = block_sum_u64(above, sh.u64_scratch);
            u64 kept_mass = above + (u64)ties_in * edge_w;

            // The draw: first position (descending) whose cumulative mass > u * kept_mass,
            // among keys >= the edge key; past the nucleus (rounding) means its last element.
            u64 target = (u64)((double)u * (double)kept_mass);
            unsigned int pos;
            unsigned int draw_key;
            if (target >= kept_mass) {
                pos = kept - 1;
                draw_key = edge.key;
            } else {
                Cut d = radix_select(row, vocab, max, inv_t, true, target, true, edge.key, &sh);
                float dl = __uint_as_float((d.key & 0x80000000u) ? (d.key & 0x7fffffffu) : ~d.key);
                u64 dw = to_fixed(weight_of(dl, max, inv_t));
                pos = d.count_above + tie_index(d, dw, target, true);
                draw_key = d.key;
                if (pos > kept - 1) { pos = kept - 1; draw_key = edge.key; }
            }
            // The element at `pos`: the (pos - count_above(draw_key))-th tie of its key.
            unsigned int above_draw;
            if (draw_key == edge.key) {
                above_draw = edge.count_above;
            } else {
                u64 c = 0;
                for (int i = threadIdx.x; i < vocab; i += THREADS) c += order_key(row[i]) > draw_key;
                above_draw = (unsigned int)block_sum_u64(c, sh.u64_scratch);
            }
            int found = nth_with_key(row, vocab, draw_key, pos - above_draw, &sh);
            token = found != 0x7fffffff ? found : best_i;
        }
    }
    if (threadIdx.x == 0) {
        status_out[r] = STATUS_OK;
        token_out[r] = token;
        logprob_out[r] = row[token] - max - logf(total_one);
    }
}
