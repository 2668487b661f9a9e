"""Triton kernels of the fused GunnLayer path (-kernels triton); the host side is models/fused/layer.py.

One update unit takes 4 kernels forward and 5 backward instead of about 20 aten kernels each way; every
BatchNorm's batch statistics come from the epilogue of the kernel that produces its input, and its
normalisation (and the ReLU after it) is applied while the next kernel loads that input.

Layout. Activations are NCHW-contiguous, seen as [N, channels, HW]. A tile is BLOCK_P pixels of one image
(contiguous in memory) by a block of channels. Grid axis 1 is the BatchNorm group g: -bnSplit slice g of
the batch, cut as slices.slice_sizes cuts it (K = num_programs(1) slices; _slice_start), each with its
own statistics set; a program walks the tiles of its group with stride num_programs(0), keeps per-channel
sums in float64 registers and adds them to the statistics workspace once, at the end, with atomics. Empty
slices (fewer images than K) have no tiles and change nothing.

Statistics workspace of one segment: float64 [2, G, VW]. Forward: moment 0 = sum x, moment 1 = sum x^2.
Backward: moment 0 = sum g, moment 1 = sum g * xhat, g being the gradient arriving at the BatchNorm's
output. The channel index v runs over the unit's BatchNorms in the order shortcut (HS channels; HS = 0
without a shortcut), bn1 (M = 2o), bn2 (M), bn3 (O = o): VW = HS + 2M + O.

Running statistics: group g normalises, in evaluation, with statistics set g of each BatchNorm and, in
training, updates set g from its batch statistics (momentum, unbiased variance, as aten), as
models/batchnorm.BatchNorm2d does; set 0 is running_mean / running_var, set g > 0 row g - 1 of
split_running_mean / split_running_var (_stats_set). Program (0, g) of the kernel that consumes the
normalised values updates them; in training it reads only the batch statistics, so nothing reads a
running statistic while it changes. eps and momentum come from a float64 tensor `consts` (a Python float
kernel argument would be rounded to float32).

The batch-dependent integers (segment offset, z split, batch size, slice corrections) are not specialised
on, so that one compiled kernel serves every segment and batch size.

PREC is the matrix product: 'tf32' / 'ieee' use tl.dot, 'fma' multiplies out in registers (float64, for
which tensor-core dot products may not exist).
"""
import os

import triton
import triton.language as tl

# The atomics' memory order: Triton's default 'acq_rel' fences each one; nothing reads an atomic's target in
# the kernel that adds to it, so 'relaxed' is as correct. GUNN_FUSED_V1_ATOMICS=relaxed switches it for the
# A/B of benchmarks/gpu_profile.py (read once, at import: a compiled kernel keeps the value it saw).
ATOMIC_SEM = tl.constexpr(os.environ.get('GUNN_FUSED_V1_ATOMICS', 'acq_rel'))


@triton.jit
def _mm(a, b, acc, PREC: tl.constexpr):
    """acc + a @ b."""
    if PREC == 'fma':
        return acc + tl.sum(a[:, :, None] * b[None, :, :], axis=1)
    else:
        return tl.dot(a, b, acc, input_precision=PREC)


@triton.jit
def _slice_start(g, N, late):
    """First image of slice g of N images in K = num_programs(1) slices: ceil(g * (N / K)) computed in
    floating point, as slices.slice_sizes (and the original's DataParallelTable) computes it. That
    is the exact ceil(g * N / K), except where g * N / K is an integer that the rounding of N / K lifts
    past: then one more, which bit g of `late` (Geometry.late, from slice_sizes) says."""
    K = tl.num_programs(1)
    return (g * N + K - 1) // K + ((late.to(tl.int64) >> g) & 1).to(tl.int32)


@triton.jit
def _group(N, late, HW, BLOCK_P: tl.constexpr):
    """(group, its first image, its tile count, tiles per image, its pixel count as float64). An empty
    group has no tiles and counts 1 pixel, so that its unused statistics are 0 rather than 0 / 0."""
    g = tl.program_id(1)
    img0 = _slice_start(g, N, late)
    n_img = _slice_start(g + 1, N, late) - img0
    tiles = tl.cdiv(HW, BLOCK_P)
    return g, img0, n_img * tiles, tiles, tl.maximum(n_img * HW, 1).to(tl.float64)


@triton.jit
def _stats_set(rm, rv, split_rm, split_rv, NC):
    """(running mean, running variance) pointers of the program's group g: statistics set g, as
    BatchNorm2d.running_stats(g); split_rm / split_rv are [K - 1, NC], contiguous."""
    g = tl.program_id(1)
    if g > 0:
        rm = split_rm + (g - 1) * NC
        rv = split_rv + (g - 1) * NC
    return rm, rv


@triton.jit
def _tile(t, img0, tiles, HW, BLOCK_P: tl.constexpr):
    """(image as int64, pixel offsets, pixel mask) of the group's tile t. Offsets within one image stay
    int32; each kernel adds the image's int64 base offset to its scalar pointers."""
    n = (img0 + t // tiles).to(tl.int64)
    p = (t % tiles) * BLOCK_P + tl.arange(0, BLOCK_P)
    return n, p, p < HW


@triton.jit
def _load_two(a_ptrs, a_mask, b_ptrs, b_mask):
    """a where a_mask, b where b_mask (disjoint), 0 elsewhere. Two masked loads rather than a load through
    a select of pointers, which would hide the pointers' contiguity from the vectoriser."""
    return tl.load(a_ptrs, mask=a_mask, other=0.0) + tl.load(b_ptrs, mask=b_mask, other=0.0)


@triton.jit
def _mean_invstd(stats, g, VW, v, c, cmask, count, rm, rv, eps, TRAIN: tl.constexpr):
    """float64 mean and 1/sqrt(var + eps) of BatchNorm channels c (workspace index v): the batch
    statistics of group g in training, its statistics set (rm, rv: _stats_set) otherwise."""
    G = tl.num_programs(1)
    if TRAIN:
        s1 = tl.load(stats + g * VW + v, mask=cmask, other=0.0)
        s2 = tl.load(stats + (G + g) * VW + v, mask=cmask, other=0.0)
        mean = s1 / count
        var = tl.maximum(s2 / count - mean * mean, 0.0)
    else:
        mean = tl.load(rm + c, mask=cmask, other=0.0).to(tl.float64)
        var = tl.load(rv + c, mask=cmask, other=1.0).to(tl.float64)
    return mean, 1.0 / tl.sqrt(var + eps)


@triton.jit
def _bn_coeffs(stats, g, VW, v, c, cmask, count, gamma_ptr, beta_ptr, rm, rv, eps, TRAIN: tl.constexpr):
    """(mean, invstd, gamma * invstd, beta) of BatchNorm channels c, in the parameters' dtype."""
    dt = gamma_ptr.dtype.element_ty
    mean, invstd = _mean_invstd(stats, g, VW, v, c, cmask, count, rm, rv, eps, TRAIN)
    scale = invstd * tl.load(gamma_ptr + c, mask=cmask, other=0.0)
    return mean.to(dt), invstd.to(dt), scale.to(dt), tl.load(beta_ptr + c, mask=cmask, other=0.0)


@triton.jit
def _bn_relu(x, mean, scale, beta, mask2):
    """relu(BatchNorm(x)) of a [pixels, channels] tile; 0 outside mask2 (padding, tails)."""
    u = (x - mean[None, :]) * scale[None, :] + beta[None, :]
    return tl.where(mask2 & (u > 0), u, 0.0)


@triton.jit
def _bn_grad_coeffs(fstats, rstats, g, VW, v, c, cmask, count, gamma_ptr, rm, rv, eps, TRAIN: tl.constexpr):
    """(mean, invstd, gamma * invstd, sum g / count, sum g*xhat / count) of BatchNorm channels c, in the
    parameters' dtype: what _bn_input_grad needs."""
    G = tl.num_programs(1)
    dt = gamma_ptr.dtype.element_ty
    mean, invstd = _mean_invstd(fstats, g, VW, v, c, cmask, count, rm, rv, eps, TRAIN)
    k = invstd * tl.load(gamma_ptr + c, mask=cmask, other=0.0)
    r0 = tl.load(rstats + g * VW + v, mask=cmask, other=0.0) / count
    r1 = tl.load(rstats + (G + g) * VW + v, mask=cmask, other=0.0) / count
    return mean.to(dt), invstd.to(dt), k.to(dt), r0.to(dt), r1.to(dt)


@triton.jit
def _bn_input_grad(gout, x, mean, invstd, k, r0, r1, TRAIN: tl.constexpr):
    """d loss / d BatchNorm input from d loss / d output (tiles), aten's formula."""
    if TRAIN:
        xhat = (x - mean[None, :]) * invstd[None, :]
        return k[None, :] * (gout - r0[None, :] - xhat * r1[None, :])
    else:
        return k[None, :] * gout


@triton.jit
def _add_moments(s1, s2, t):
    """Per-channel sum and sum of squares of a tile added in float64 (the variance is E[x^2] - mean^2)."""
    t = t.to(tl.float64)
    return s1 + tl.sum(t, 0), s2 + tl.sum(t * t, 0)


@triton.jit
def _add_grad_moments(s0, s1, g, x, mean, invstd):
    """Per-channel sum g and sum g * xhat of a tile added in float64."""
    g = g.to(tl.float64)
    xhat = ((x - mean[None, :]) * invstd[None, :]).to(tl.float64)
    return s0 + tl.sum(g, 0), s1 + tl.sum(g * xhat, 0)


@triton.jit
def _add_sums(stats, VW, v, cmask, s1, s2):
    G = tl.num_programs(1)
    g = tl.program_id(1)
    tl.atomic_add(stats + g * VW + v, s1, mask=cmask, sem=ATOMIC_SEM)
    tl.atomic_add(stats + (G + g) * VW + v, s2, mask=cmask, sem=ATOMIC_SEM)


@triton.jit
def _update_running_block(stats, VW, v0, c, cm, count, rm, rv, momentum):
    """Channels c (mask cm) of statistics set g (rm, rv) from group g's batch statistics, as aten: momentum,
    unbiased variance."""
    G = tl.num_programs(1)
    g = tl.program_id(1)
    mean = tl.load(stats + g * VW + v0 + c, mask=cm, other=0.0) / count
    var = tl.maximum(tl.load(stats + (G + g) * VW + v0 + c, mask=cm, other=0.0) / count - mean * mean, 0.0)
    old_mean = tl.load(rm + c, mask=cm, other=0.0).to(tl.float64)
    old_var = tl.load(rv + c, mask=cm, other=0.0).to(tl.float64)
    tl.store(rm + c, (momentum * mean + (1 - momentum) * old_mean).to(rm.dtype.element_ty), mask=cm)
    tl.store(rv + c, (momentum * (var * count / (count - 1)) + (1 - momentum) * old_var).to(rv.dtype.element_ty),
             mask=cm)


@triton.jit
def _update_running(stats, VW, v0, NC, count, rm, rv, nbt, consts, BLOCK: tl.constexpr):
    """Statistics set g (rm, rv) from group g's batch statistics; group 0 counts the batch in
    num_batches_tracked, which BatchNorm2d keeps once for all sets."""
    momentum = tl.load(consts + 1)
    for c0 in range(0, NC, BLOCK):
        c = c0 + tl.arange(0, BLOCK)
        _update_running_block(stats, VW, v0, c, c < NC, count, rm, rv, momentum)
    if tl.program_id(1) == 0:
        tl.store(nbt, tl.load(nbt) + 1)


@triton.jit
def _write_bn_grads(rstats, VW, v0, NC, dgamma, dbeta, BLOCK: tl.constexpr):
    """BatchNorm weight and bias gradients: sum g * xhat and sum g over all groups."""
    G = tl.num_programs(1)
    for c0 in range(0, NC, BLOCK):
        c = c0 + tl.arange(0, BLOCK)
        cm = c < NC
        s0 = tl.zeros([BLOCK], dtype=tl.float64)
        s1 = tl.zeros([BLOCK], dtype=tl.float64)
        for gg in range(0, G):
            s0 += tl.load(rstats + gg * VW + v0 + c, mask=cm, other=0.0)
            s1 += tl.load(rstats + (G + gg) * VW + v0 + c, mask=cm, other=0.0)
        tl.store(dgamma + c, s1.to(dgamma.dtype.element_ty), mask=cm)
        tl.store(dbeta + c, s0.to(dbeta.dtype.element_ty), mask=cm)


@triton.jit
def _first_program():
    return (tl.program_id(0) == 0) & (tl.program_id(1) == 0) & (tl.program_id(2) == 0)


@triton.jit
def _updates_running(ntiles):
    """Whether this program updates its group's statistics set: the first one of a non-empty group."""
    return (tl.program_id(0) == 0) & (tl.program_id(2) == 0) & (ntiles > 0)


# ---------------------------------------------------------------------------------------------- forward

@triton.jit(do_not_specialize=['split', 'N', 'late'])
def head_forward_kernel(z_lo, z_hi, split, w_s, w_b, h, fstats,
                        C, HW, HS, HC, VW, N, late,
                        STATS: tl.constexpr, PREC: tl.constexpr,
                        BLOCK_P: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_HC: tl.constexpr):
    """h = [shortcut conv; branch conv1](z), the unit's two 1x1 convolutions of z as one GEMM over pixels,
    and (STATS) their batch statistics. z's channels below `split` come from z_lo, the others from z_hi
    (forward: both the layer buffer; backward recomputation: the layer output and input)."""
    g, img0, ntiles, tiles, count = _group(N, late, HW, BLOCK_P)
    co = tl.arange(0, BLOCK_HC)
    comask = co < HC
    k = tl.arange(0, BLOCK_K)
    s1 = tl.zeros([BLOCK_HC], dtype=tl.float64)
    s2 = tl.zeros([BLOCK_HC], dtype=tl.float64)
    for t in range(tl.program_id(0), ntiles, tl.num_programs(0)):
        n, p, pmask = _tile(t, img0, tiles, HW, BLOCK_P)
        zb = n * C * HW
        acc = tl.zeros([BLOCK_P, BLOCK_HC], dtype=h.dtype.element_ty)
        for k0 in range(0, C, BLOCK_K):
            ck = k0 + k
            off = ck[None, :] * HW + p[:, None]
            m = pmask[:, None] & (ck[None, :] < C)
            zt = _load_two(z_lo + zb + off, m & (ck[None, :] < split), z_hi + zb + off, m & (ck[None, :] >= split))
            wm = comask[None, :] & (ck[:, None] < C)
            wt = _load_two(w_s + co[None, :] * C + ck[:, None], wm & (co[None, :] < HS),
                           w_b + (co[None, :] - HS) * C + ck[:, None], wm & (co[None, :] >= HS))
            acc = _mm(zt, wt, acc, PREC)
        tl.store(h + n * HC * HW + co[None, :] * HW + p[:, None], acc, mask=pmask[:, None] & comask[None, :])
        if STATS:
            s1, s2 = _add_moments(s1, s2, acc)
    if STATS:
        _add_sums(fstats, VW, co, comask, s1, s2)


@triton.jit(do_not_specialize=['N', 'late'])
def conv3x3_forward_kernel(h, w2, a2, fstats, consts, gamma1, beta1, rm1, rv1, srm1, srv1, nbt1,
                           H, W, HS, HC, M, VW, N, late,
                           TRAIN: tl.constexpr, STATS: tl.constexpr, UPDATE: tl.constexpr, PREC: tl.constexpr,
                           BLOCK_P: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_M: tl.constexpr):
    """a2 = conv3x3(relu(bn1(h_b))) as an implicit GEMM (9 shifted taps), bn1 applied on load, and (STATS)
    a2's batch statistics; (UPDATE) bn1's running statistics."""
    HW = H * W
    g, img0, ntiles, tiles, count = _group(N, late, HW, BLOCK_P)
    rm1, rv1 = _stats_set(rm1, rv1, srm1, srv1, M)
    eps = tl.load(consts)
    co = tl.arange(0, BLOCK_M)
    comask = co < M
    s1 = tl.zeros([BLOCK_M], dtype=tl.float64)
    s2 = tl.zeros([BLOCK_M], dtype=tl.float64)
    for t in range(tl.program_id(0), ntiles, tl.num_programs(0)):
        n, p, pmask = _tile(t, img0, tiles, HW, BLOCK_P)
        hb = h + (n * HC + HS) * HW
        y = p // W
        x = p % W
        acc = tl.zeros([BLOCK_P, BLOCK_M], dtype=a2.dtype.element_ty)
        for k0 in range(0, M, BLOCK_K):
            ci = k0 + tl.arange(0, BLOCK_K)
            cimask = ci < M
            mean, _, scale, beta = _bn_coeffs(fstats, g, VW, HS + ci, ci, cimask, count, gamma1, beta1, rm1, rv1, eps,
                                           TRAIN)
            for tap in range(9):
                ys = y + tap // 3 - 1
                xs = x + tap % 3 - 1
                valid = pmask & (ys >= 0) & (ys < H) & (xs >= 0) & (xs < W)
                m2 = valid[:, None] & cimask[None, :]
                hv = tl.load(hb + ci[None, :] * HW + (ys * W + xs)[:, None], mask=m2, other=0.0)
                r1 = _bn_relu(hv, mean, scale, beta, m2)
                wt = tl.load(w2 + (co[None, :] * M + ci[:, None]) * 9 + tap, mask=comask[None, :] & cimask[:, None],
                             other=0.0)
                acc = _mm(r1, wt, acc, PREC)
        tl.store(a2 + n * M * HW + co[None, :] * HW + p[:, None], acc, mask=pmask[:, None] & comask[None, :])
        if STATS:
            s1, s2 = _add_moments(s1, s2, acc)
    if STATS:
        _add_sums(fstats, VW, HS + M + co, comask, s1, s2)
    if UPDATE:
        if _updates_running(ntiles):
            _update_running(fstats, VW, HS, M, count, rm1, rv1, nbt1, consts, BLOCK_M)


@triton.jit(do_not_specialize=['N', 'late'])
def out_conv_forward_kernel(a2, w3, a3, fstats, consts, gamma2, beta2, rm2, rv2, srm2, srv2, nbt2,
                            HW, HS, M, O, VW, N, late,
                            TRAIN: tl.constexpr, STATS: tl.constexpr, UPDATE: tl.constexpr, PREC: tl.constexpr,
                            BLOCK_P: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_O: tl.constexpr):
    """a3 = conv1x1(relu(bn2(a2))), bn2 applied on load, and (STATS) a3's batch statistics; (UPDATE) bn2's
    running statistics."""
    g, img0, ntiles, tiles, count = _group(N, late, HW, BLOCK_P)
    rm2, rv2 = _stats_set(rm2, rv2, srm2, srv2, M)
    eps = tl.load(consts)
    co = tl.arange(0, BLOCK_O)
    comask = co < O
    s1 = tl.zeros([BLOCK_O], dtype=tl.float64)
    s2 = tl.zeros([BLOCK_O], dtype=tl.float64)
    for t in range(tl.program_id(0), ntiles, tl.num_programs(0)):
        n, p, pmask = _tile(t, img0, tiles, HW, BLOCK_P)
        acc = tl.zeros([BLOCK_P, BLOCK_O], dtype=a3.dtype.element_ty)
        for k0 in range(0, M, BLOCK_K):
            cj = k0 + tl.arange(0, BLOCK_K)
            cjmask = cj < M
            mean, _, scale, beta = _bn_coeffs(fstats, g, VW, HS + M + cj, cj, cjmask, count, gamma2, beta2, rm2, rv2,
                                           eps, TRAIN)
            m2 = pmask[:, None] & cjmask[None, :]
            av = tl.load(a2 + n * M * HW + cj[None, :] * HW + p[:, None], mask=m2, other=0.0)
            r2 = _bn_relu(av, mean, scale, beta, m2)
            wt = tl.load(w3 + co[None, :] * M + cj[:, None], mask=comask[None, :] & cjmask[:, None], other=0.0)
            acc = _mm(r2, wt, acc, PREC)
        tl.store(a3 + n * O * HW + co[None, :] * HW + p[:, None], acc, mask=pmask[:, None] & comask[None, :])
        if STATS:
            s1, s2 = _add_moments(s1, s2, acc)
    if STATS:
        _add_sums(fstats, VW, HS + 2 * M + co, comask, s1, s2)
    if UPDATE:
        if _updates_running(ntiles):
            _update_running(fstats, VW, HS + M, M, count, rm2, rv2, nbt2, consts, BLOCK_O)


@triton.jit(do_not_specialize=['seg0', 'N', 'late'])
def segment_update_kernel(buf, seg0, a3, h, fstats, consts,
                          gamma3, beta3, rm3, rv3, srm3, srv3, nbt3, gamma_s, beta_s, rm_s, rv_s, srm_s, srv_s, nbt_s,
                          C, HW, HS, HC, M, O, VW, N, late,
                          TRAIN: tl.constexpr, UPDATE: tl.constexpr, SHORTCUT: tl.constexpr,
                          BLOCK_P: tl.constexpr, BLOCK_O: tl.constexpr):
    """buf[:, seg0:seg0+O] += bn_s(h_s) + bn3(a3), in place in the layer buffer; (UPDATE) bn3's and bn_s's
    running statistics."""
    g, img0, ntiles, tiles, count = _group(N, late, HW, BLOCK_P)
    rm3, rv3 = _stats_set(rm3, rv3, srm3, srv3, O)
    rm_s, rv_s = _stats_set(rm_s, rv_s, srm_s, srv_s, O)
    eps = tl.load(consts)
    co = tl.arange(0, BLOCK_O)
    comask = co < O
    mean3, _, scale3, beta3v = _bn_coeffs(fstats, g, VW, HS + 2 * M + co, co, comask, count, gamma3, beta3, rm3, rv3,
                                       eps, TRAIN)
    if SHORTCUT:
        mean_s, _, scale_s, beta_sv = _bn_coeffs(fstats, g, VW, co, co, comask, count, gamma_s, beta_s, rm_s, rv_s,
                                              eps, TRAIN)
    for t in range(tl.program_id(0), ntiles, tl.num_programs(0)):
        n, p, pmask = _tile(t, img0, tiles, HW, BLOCK_P)
        m2 = pmask[:, None] & comask[None, :]
        off = co[None, :] * HW + p[:, None]
        av = tl.load(a3 + n * O * HW + off, mask=m2, other=0.0)
        y = (av - mean3[None, :]) * scale3[None, :] + beta3v[None, :]
        if SHORTCUT:
            hv = tl.load(h + n * HC * HW + off, mask=m2, other=0.0)
            y = (hv - mean_s[None, :]) * scale_s[None, :] + beta_sv[None, :] + y
        ptrs = buf + (n * C + seg0) * HW + off
        tl.store(ptrs, tl.load(ptrs, mask=m2, other=0.0) + y, mask=m2)
    if UPDATE:
        if _updates_running(ntiles):
            _update_running(fstats, VW, HS + 2 * M, O, count, rm3, rv3, nbt3, consts, BLOCK_O)
            if SHORTCUT:
                _update_running(fstats, VW, 0, O, count, rm_s, rv_s, nbt_s, consts, BLOCK_O)


# --------------------------------------------------------------------------------------------- backward

@triton.jit(do_not_specialize=['seg0', 'N', 'late'])
def out_bn_backward_sums_kernel(grad, seg0, a3, h, fstats, rstats, consts,
                                rm3, rv3, srm3, srv3, rm_s, rv_s, srm_s, srv_s,
                                C, HW, HS, HC, M, O, VW, N, late,
                                TRAIN: tl.constexpr, SHORTCUT: tl.constexpr,
                                BLOCK_P: tl.constexpr, BLOCK_O: tl.constexpr):
    """The reductions of bn3's and bn_s's backward: sum gy, sum gy * xhat3, sum gy * xhat_s, gy being the
    gradient of the segment's output (grad[:, seg0:seg0+O])."""
    g, img0, ntiles, tiles, count = _group(N, late, HW, BLOCK_P)
    rm3, rv3 = _stats_set(rm3, rv3, srm3, srv3, O)
    rm_s, rv_s = _stats_set(rm_s, rv_s, srm_s, srv_s, O)
    eps = tl.load(consts)
    co = tl.arange(0, BLOCK_O)
    comask = co < O
    dt = a3.dtype.element_ty
    mean3, inv3 = _mean_invstd(fstats, g, VW, HS + 2 * M + co, co, comask, count, rm3, rv3, eps, TRAIN)
    mean3, inv3 = mean3.to(dt), inv3.to(dt)
    if SHORTCUT:
        mean_s, inv_s = _mean_invstd(fstats, g, VW, co, co, comask, count, rm_s, rv_s, eps, TRAIN)
        mean_s, inv_s = mean_s.to(dt), inv_s.to(dt)
    s0 = tl.zeros([BLOCK_O], dtype=tl.float64)
    s3 = tl.zeros([BLOCK_O], dtype=tl.float64)
    ss = tl.zeros([BLOCK_O], dtype=tl.float64)
    for t in range(tl.program_id(0), ntiles, tl.num_programs(0)):
        n, p, pmask = _tile(t, img0, tiles, HW, BLOCK_P)
        m2 = pmask[:, None] & comask[None, :]
        off = co[None, :] * HW + p[:, None]
        gy = tl.load(grad + (n * C + seg0) * HW + off, mask=m2, other=0.0)
        av = tl.load(a3 + n * O * HW + off, mask=m2, other=0.0)
        s0, s3 = _add_grad_moments(s0, s3, gy, av, mean3, inv3)
        if SHORTCUT:
            hv = tl.load(h + n * HC * HW + off, mask=m2, other=0.0)
            _, ss = _add_grad_moments(s0, ss, gy, hv, mean_s, inv_s)
    _add_sums(rstats, VW, HS + 2 * M + co, comask, s0, s3)
    if SHORTCUT:
        _add_sums(rstats, VW, co, comask, s0, ss)


@triton.jit(do_not_specialize=['seg0', 'N', 'late'])
def out_conv_backward_kernel(grad, seg0, a3, a2, h, w3, g_mid, g_head, fstats, rstats, consts,
                             gamma3, rm3, rv3, srm3, srv3, gamma2, beta2, rm2, rv2, srm2, srv2,
                             gamma_s, rm_s, rv_s, srm_s, srv_s,
                             dw3, dgamma3, dbeta3, dgamma_s, dbeta_s,
                             C, HW, HS, HC, M, O, VW, N, late,
                             TRAIN: tl.constexpr, SHORTCUT: tl.constexpr, PREC: tl.constexpr,
                             BLOCK_P: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_M: tl.constexpr):
    """Backward of bn3 and the last 1x1 convolution: ga3 = bn3'(gy); g_mid = relu2'(ga3 @ W3) (the
    gradient arriving at bn2's output) with its bn2 reductions; dW3 = ga3^T relu(bn2(a2)); and the
    shortcut's bn_s'(gy) into g_head[:, :HS]. Program (0, 0) writes bn3's and bn_s's weight and bias
    gradients."""
    g, img0, ntiles, tiles, count = _group(N, late, HW, BLOCK_P)
    rm3, rv3 = _stats_set(rm3, rv3, srm3, srv3, O)
    rm2, rv2 = _stats_set(rm2, rv2, srm2, srv2, M)
    rm_s, rv_s = _stats_set(rm_s, rv_s, srm_s, srv_s, O)
    eps = tl.load(consts)
    co = tl.arange(0, BLOCK_O)
    comask = co < O
    cj = tl.arange(0, BLOCK_M)
    cjmask = cj < M
    mean3, inv3, k3, r0_3, r1_3 = _bn_grad_coeffs(fstats, rstats, g, VW, HS + 2 * M + co, co, comask, count,
                                                  gamma3, rm3, rv3, eps, TRAIN)
    mean2, inv2, scale2, beta2v = _bn_coeffs(fstats, g, VW, HS + M + cj, cj, cjmask, count, gamma2, beta2, rm2, rv2,
                                             eps, TRAIN)
    if SHORTCUT:
        mean_s, inv_s, k_s, r0_s, r1_s = _bn_grad_coeffs(fstats, rstats, g, VW, co, co, comask, count,
                                                         gamma_s, rm_s, rv_s, eps, TRAIN)
    w = tl.load(w3 + co[:, None] * M + cj[None, :], mask=comask[:, None] & cjmask[None, :], other=0.0)
    gw = tl.zeros([BLOCK_O, BLOCK_M], dtype=w.dtype)
    s0 = tl.zeros([BLOCK_M], dtype=tl.float64)
    s1 = tl.zeros([BLOCK_M], dtype=tl.float64)
    for t in range(tl.program_id(0), ntiles, tl.num_programs(0)):
        n, p, pmask = _tile(t, img0, tiles, HW, BLOCK_P)
        mo = pmask[:, None] & comask[None, :]
        mj = pmask[:, None] & cjmask[None, :]
        off_o = co[None, :] * HW + p[:, None]
        off_m = cj[None, :] * HW + p[:, None]
        gy = tl.load(grad + (n * C + seg0) * HW + off_o, mask=mo, other=0.0)
        av3 = tl.load(a3 + n * O * HW + off_o, mask=mo, other=0.0)
        ga3 = tl.where(mo, _bn_input_grad(gy, av3, mean3, inv3, k3, r0_3, r1_3, TRAIN), 0.0)
        av2 = tl.load(a2 + n * M * HW + off_m, mask=mj, other=0.0)
        r2 = _bn_relu(av2, mean2, scale2, beta2v, mj)
        gm = tl.where(r2 > 0, _mm(ga3, w, tl.zeros([BLOCK_P, BLOCK_M], dtype=w.dtype), PREC), 0.0)
        tl.store(g_mid + n * M * HW + off_m, gm, mask=mj)
        s0, s1 = _add_grad_moments(s0, s1, gm, av2, mean2, inv2)
        gw = _mm(tl.trans(ga3), r2, gw, PREC)
        if SHORTCUT:
            hv = tl.load(h + n * HC * HW + off_o, mask=mo, other=0.0)
            tl.store(g_head + n * HC * HW + off_o, _bn_input_grad(gy, hv, mean_s, inv_s, k_s, r0_s, r1_s, TRAIN),
                     mask=mo)
    tl.atomic_add(dw3 + co[:, None] * M + cj[None, :], gw, mask=comask[:, None] & cjmask[None, :], sem=ATOMIC_SEM)
    _add_sums(rstats, VW, HS + M + cj, cjmask, s0, s1)
    if _first_program():
        _write_bn_grads(rstats, VW, HS + 2 * M, O, dgamma3, dbeta3, BLOCK_O)
        if SHORTCUT:
            _write_bn_grads(rstats, VW, 0, O, dgamma_s, dbeta_s, BLOCK_O)


@triton.jit(do_not_specialize=['N', 'late'])
def conv3x3_backward_input_kernel(g_mid, a2, h, w2, g_head, fstats, rstats, consts,
                                  gamma2, rm2, rv2, srm2, srv2, gamma1, beta1, rm1, rv1, srm1, srv1, dgamma2, dbeta2,
                                  H, W, HS, HC, M, VW, N, late,
                                  TRAIN: tl.constexpr, PREC: tl.constexpr,
                                  BLOCK_P: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_M: tl.constexpr):
    """Backward of bn2 (applied on load of g_mid) and of the 3x3 convolution wrt its input, as a transposed
    implicit GEMM; times relu1' gives the gradient arriving at bn1's output, stored in g_head[:, HS:], with
    its bn1 reductions. Program (0, 0) writes bn2's weight and bias gradients."""
    HW = H * W
    g, img0, ntiles, tiles, count = _group(N, late, HW, BLOCK_P)
    rm2, rv2 = _stats_set(rm2, rv2, srm2, srv2, M)
    rm1, rv1 = _stats_set(rm1, rv1, srm1, srv1, M)
    eps = tl.load(consts)
    ci = tl.arange(0, BLOCK_M)
    cimask = ci < M
    mean1, inv1, scale1, beta1v = _bn_coeffs(fstats, g, VW, HS + ci, ci, cimask, count, gamma1, beta1, rm1, rv1,
                                             eps, TRAIN)
    s0 = tl.zeros([BLOCK_M], dtype=tl.float64)
    s1 = tl.zeros([BLOCK_M], dtype=tl.float64)
    for t in range(tl.program_id(0), ntiles, tl.num_programs(0)):
        n, p, pmask = _tile(t, img0, tiles, HW, BLOCK_P)
        y = p // W
        x = p % W
        acc = tl.zeros([BLOCK_P, BLOCK_M], dtype=g_head.dtype.element_ty)
        for k0 in range(0, M, BLOCK_K):
            cc = k0 + tl.arange(0, BLOCK_K)
            ccmask = cc < M
            mean2, inv2, k2, r0_2, r1_2 = _bn_grad_coeffs(fstats, rstats, g, VW, HS + M + cc, cc, ccmask, count,
                                                          gamma2, rm2, rv2, eps, TRAIN)
            for tap in range(9):
                ys = y - (tap // 3 - 1)
                xs = x - (tap % 3 - 1)
                valid = pmask & (ys >= 0) & (ys < H) & (xs >= 0) & (xs < W)
                m2 = valid[:, None] & ccmask[None, :]
                off = cc[None, :] * HW + (ys * W + xs)[:, None]
                gm = tl.load(g_mid + n * M * HW + off, mask=m2, other=0.0)
                av = tl.load(a2 + n * M * HW + off, mask=m2, other=0.0)
                ga2 = tl.where(m2, _bn_input_grad(gm, av, mean2, inv2, k2, r0_2, r1_2, TRAIN), 0.0)
                wt = tl.load(w2 + (cc[:, None] * M + ci[None, :]) * 9 + tap, mask=ccmask[:, None] & cimask[None, :],
                             other=0.0)
                acc = _mm(ga2, wt, acc, PREC)
        mi = pmask[:, None] & cimask[None, :]
        off1 = ci[None, :] * HW + p[:, None]
        hv = tl.load(h + (n * HC + HS) * HW + off1, mask=mi, other=0.0)
        g1 = tl.where(_bn_relu(hv, mean1, scale1, beta1v, mi) > 0, acc, 0.0)
        tl.store(g_head + (n * HC + HS) * HW + off1, g1, mask=mi)
        s0, s1 = _add_grad_moments(s0, s1, g1, hv, mean1, inv1)
    _add_sums(rstats, VW, HS + ci, cimask, s0, s1)
    if _first_program():
        _write_bn_grads(rstats, VW, HS + M, M, dgamma2, dbeta2, BLOCK_M)


@triton.jit(do_not_specialize=['N', 'late'])
def conv3x3_backward_weight_kernel(g_mid, a2, h, dw2, fstats, rstats, consts,
                                   gamma2, rm2, rv2, srm2, srv2, gamma1, beta1, rm1, rv1, srm1, srv1,
                                   H, W, HS, HC, M, VW, N, late,
                                   TRAIN: tl.constexpr, PREC: tl.constexpr,
                                   BLOCK_P: tl.constexpr, BLOCK_M: tl.constexpr):
    """dW2[:, :, tap] = bn2'(g_mid)^T @ relu(bn1(h_b)) shifted by the tap; grid axis 2 is the tap."""
    HW = H * W
    g, img0, ntiles, tiles, count = _group(N, late, HW, BLOCK_P)
    rm2, rv2 = _stats_set(rm2, rv2, srm2, srv2, M)
    rm1, rv1 = _stats_set(rm1, rv1, srm1, srv1, M)
    eps = tl.load(consts)
    tap = tl.program_id(2)
    dy = tap // 3 - 1
    dx = tap % 3 - 1
    c = tl.arange(0, BLOCK_M)
    cmask = c < M
    mean2, inv2, k2, r0_2, r1_2 = _bn_grad_coeffs(fstats, rstats, g, VW, HS + M + c, c, cmask, count,
                                                  gamma2, rm2, rv2, eps, TRAIN)
    mean1, _, scale1, beta1v = _bn_coeffs(fstats, g, VW, HS + c, c, cmask, count, gamma1, beta1, rm1, rv1, eps,
                                          TRAIN)
    gw = tl.zeros([BLOCK_M, BLOCK_M], dtype=dw2.dtype.element_ty)
    for t in range(tl.program_id(0), ntiles, tl.num_programs(0)):
        n, p, pmask = _tile(t, img0, tiles, HW, BLOCK_P)
        m2 = pmask[:, None] & cmask[None, :]
        off = c[None, :] * HW + p[:, None]
        gm = tl.load(g_mid + n * M * HW + off, mask=m2, other=0.0)
        av = tl.load(a2 + n * M * HW + off, mask=m2, other=0.0)
        ga2 = tl.where(m2, _bn_input_grad(gm, av, mean2, inv2, k2, r0_2, r1_2, TRAIN), 0.0)
        ys = p // W + dy
        xs = p % W + dx
        valid = pmask & (ys >= 0) & (ys < H) & (xs >= 0) & (xs < W)
        ms = valid[:, None] & cmask[None, :]
        hv = tl.load(h + (n * HC + HS) * HW + c[None, :] * HW + (ys * W + xs)[:, None], mask=ms, other=0.0)
        gw = _mm(tl.trans(ga2), _bn_relu(hv, mean1, scale1, beta1v, ms), gw, PREC)
    tl.atomic_add(dw2 + (c[:, None] * M + c[None, :]) * 9 + tap, gw, mask=cmask[:, None] & cmask[None, :],
                  sem=ATOMIC_SEM)


@triton.jit(do_not_specialize=['split', 'N', 'late'])
def head_backward_kernel(z_lo, z_hi, split, w_s, w_b, g_head, h, grad, dw_s, dw_b, fstats, rstats, consts,
                         gamma1, rm1, rv1, srm1, srv1, dgamma1, dbeta1,
                         C, HW, HS, HC, M, VW, N, late,
                         TRAIN: tl.constexpr, PREC: tl.constexpr,
                         BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_HC: tl.constexpr):
    """Backward of bn1 (on load of g_head[:, HS:]; g_head[:, :HS] already holds bn_s's input gradient) and of
    the two head 1x1 convolutions: grad[:, block] += g_head @ W_head[:, block], in place in the layer's
    gradient buffer, and dW_head[:, block] = g_head^T z; grid axis 2 is the block of z's channels. Program
    (0, 0, 0) writes bn1's weight and bias gradients."""
    g, img0, ntiles, tiles, count = _group(N, late, HW, BLOCK_P)
    rm1, rv1 = _stats_set(rm1, rv1, srm1, srv1, M)
    eps = tl.load(consts)
    c = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = c < C
    j = tl.arange(0, BLOCK_HC)
    jmask = j < HC
    jb = jmask & (j >= HS)  # the branch channels, normalised by bn1
    mean1, inv1, k1, r0_1, r1_1 = _bn_grad_coeffs(fstats, rstats, g, VW, j, j - HS, jb, count, gamma1, rm1, rv1, eps,
                                                  TRAIN)
    wmask = jmask[:, None] & cmask[None, :]
    shortcut_rows = wmask & (j[:, None] < HS)
    branch_rows = wmask & (j[:, None] >= HS)
    w_off = j[:, None] * C + c[None, :]
    w = _load_two(w_s + w_off, shortcut_rows, w_b + w_off - HS * C, branch_rows)
    gw = tl.zeros([BLOCK_HC, BLOCK_C], dtype=w.dtype)
    for t in range(tl.program_id(0), ntiles, tl.num_programs(0)):
        n, p, pmask = _tile(t, img0, tiles, HW, BLOCK_P)
        mj = pmask[:, None] & jmask[None, :]
        hoff = j[None, :] * HW + p[:, None]
        gh = tl.load(g_head + n * HC * HW + hoff, mask=mj, other=0.0)
        hv = tl.load(h + n * HC * HW + hoff, mask=pmask[:, None] & jb[None, :], other=0.0)
        gh = tl.where(jb[None, :], _bn_input_grad(gh, hv, mean1, inv1, k1, r0_1, r1_1, TRAIN), gh)
        gh = tl.where(mj, gh, 0.0)
        mc = pmask[:, None] & cmask[None, :]
        zb = n * C * HW
        off = c[None, :] * HW + p[:, None]
        zt = _load_two(z_lo + zb + off, mc & (c[None, :] < split), z_hi + zb + off, mc & (c[None, :] >= split))
        gz = _mm(gh, w, tl.zeros([BLOCK_P, BLOCK_C], dtype=w.dtype), PREC)
        tl.store(grad + zb + off, tl.load(grad + zb + off, mask=mc, other=0.0) + gz, mask=mc)
        gw = _mm(tl.trans(gh), zt, gw, PREC)
    tl.atomic_add(dw_s + w_off, gw, mask=shortcut_rows, sem=ATOMIC_SEM)
    tl.atomic_add(dw_b + w_off - HS * C, gw, mask=branch_rows, sem=ATOMIC_SEM)
    if _first_program():
        _write_bn_grads(rstats, VW, HS, M, dgamma1, dbeta1, BLOCK_HC)
