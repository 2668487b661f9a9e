"""Triton kernels of the fused GunnLayer, version 2 (-kernels triton2); the host side is models/fused/layer2.py.

The arithmetic, the layout, the statistics workspace, the -bnSplit groups and the running statistics are those
of version 1 (models/fused/kernels.py, whose helpers this file shares). What changes is how each kernel spends
its time, after the first H100 run (benchmarks/NOTES.md) found version 1 latency-bound, not bandwidth-bound:

* Every atomic is relaxed: nothing reads an atomic's target in the kernel that adds to it, and Triton's
  default (acq_rel) fences each one.
* A BatchNorm is applied as x * scale + shift (aten's form) with scale and shift computed once per program in
  its prologue, in float64 from the statistics and then in the activations' dtype; the backward's
  coefficients likewise. No float64 arithmetic inside a loop.
* Batch statistics: each thread adds its own elements of every tile into registers in the activations' dtype;
  the program reduces them across threads once, at its end, and adds one float64 atomic per channel.
* Each loop that loads activations feeds a tl.dot, so that Triton software-pipelines it (num_stages=3: the
  next iteration's loads are in flight during this one's product). The 3x3 convolution is one loop over its 9
  taps with one block of all 2o channels (version 1: 2 chunks x 9 taps, BN coefficients per chunk), H and W
  are constexpr, and its weights are pre-permuted on the host to [tap, ci, co] (contiguous rows per tap).
* The head convolutions read one concatenated [HC, C] weight (version 1: two masked loads per k-step).
* Pixel-local kernels merged (no grid-wide dependency between them): the update of segment i-1 with the head
  of unit i (forward); the head backward of unit i with the bn3/bn_s reductions of segment i-1 (backward);
  the 3x3 convolution's input and weight gradients are one launch (grid axis 2 = their roles).
* BatchNorm weight and bias gradients are not written by the kernels: the host reads them off the backward
  statistics once per layer.
"""
import triton
import triton.language as tl

from .kernels import (
    _group,
    _load_two,
    _mean_invstd,
    _mm,
    _stats_set,
    _tile,
    _update_running_block,
    _updates_running,
)


@triton.jit
def _bn_affine(stats, g, VW, v, c, cmask, count, gamma, beta, rm, rv, eps, TRAIN: tl.constexpr):
    """(mean, invstd, scale, shift) of BatchNorm channels c in the parameters' dtype, bn(x) = x * scale + shift."""
    dt = gamma.dtype.element_ty
    mean, invstd = _mean_invstd(stats, g, VW, v, c, cmask, count, rm, rv, eps, TRAIN)
    scale = invstd * tl.load(gamma + c, mask=cmask, other=0.0)
    shift = tl.load(beta + c, mask=cmask, other=0.0) - mean * scale
    return mean.to(dt), invstd.to(dt), scale.to(dt), shift.to(dt)


@triton.jit
def _relu_affine(x, scale, shift, mask2):
    """relu(x * scale + shift) of a [pixels, channels] tile; 0 outside mask2 (padding, tails)."""
    return tl.where(mask2, tl.maximum(x * scale[None, :] + shift[None, :], 0.0), 0.0)


@triton.jit
def _bn_grad_affine(fstats, rstats, g, VW, v, c, cmask, count, gamma, rm, rv, eps, TRAIN: tl.constexpr):
    """(mean, invstd, k, k0, k1) of BatchNorm channels c in the parameters' dtype: d input = k * d output + k0 +
    k1 * (x - mean), aten's k * (g - mean(g) - xhat * mean(g xhat)) with k = gamma * invstd; k0 = k1 = 0 in
    evaluation."""
    G = tl.num_programs(1)
    dt = gamma.dtype.element_ty
    mean, invstd = _mean_invstd(fstats, g, VW, v, c, cmask, count, rm, rv, eps, TRAIN)
    k = invstd * tl.load(gamma + c, mask=cmask, other=0.0)
    if TRAIN:
        k0 = -k * tl.load(rstats + g * VW + v, mask=cmask, other=0.0) / count
        k1 = -k * invstd * tl.load(rstats + (G + g) * VW + v, mask=cmask, other=0.0) / count
    else:
        k0 = k * 0.0
        k1 = k * 0.0
    return mean.to(dt), invstd.to(dt), k.to(dt), k0.to(dt), k1.to(dt)


@triton.jit
def _bn_grad(gout, x, mean, k, k0, k1):
    return k[None, :] * gout + k0[None, :] + k1[None, :] * (x - mean[None, :])


@triton.jit
def _add_moments(s1, s2, t):
    """Each thread's running sum and sum of squares of its elements (the variance is E[x^2] - mean^2)."""
    return s1 + t, s2 + t * t


@triton.jit
def _add_grad_moments(s0, s1, g, x, mean, invstd):
    """Each thread's running sum g and sum g * xhat of its elements."""
    return s0 + g, s1 + g * ((x - mean[None, :]) * invstd[None, :])


@triton.jit
def _flush_sums(stats, VW, v, cmask, sa, sb):
    """A program's per-thread sums [pixels, channels], reduced over the pixels and added in float64 to group
    g's two moments of workspace channels v: one relaxed atomic per channel and moment."""
    G = tl.num_programs(1)
    g = tl.program_id(1)
    tl.atomic_add(stats + g * VW + v, tl.sum(sa, 0).to(tl.float64), mask=cmask, sem='relaxed')
    tl.atomic_add(stats + (G + g) * VW + v, tl.sum(sb, 0).to(tl.float64), mask=cmask, sem='relaxed')


@triton.jit
def _update_running_once(stats, VW, v0, NC, count, rm, rv, nbt, consts, BLOCK: tl.constexpr):
    """Statistics set g from group g's batch statistics (BLOCK >= NC: no loop); group 0 counts the batch."""
    c = tl.arange(0, BLOCK)
    _update_running_block(stats, VW, v0, c, c < NC, count, rm, rv, tl.load(consts + 1))
    if tl.program_id(1) == 0:
        tl.store(nbt, tl.load(nbt) + 1)


# ---------------------------------------------------------------------------------------------- forward

@triton.jit(do_not_specialize=['split', 'seg0', 'N', 'late'])
def update_head_kernel(z, z_hi, split, w, h, fstats,
                       seg0, a3, hp, pstats, consts, gamma3, beta3, rm3, rv3, srm3, srv3, nbt3,
                       gamma_s, beta_s, rm_s, rv_s, srm_s, srv_s, nbt_s,
                       C, HW, HS, HC, M, O, VW, N, late,
                       HEAD: tl.constexpr, SEGMENT: tl.constexpr, SPLIT: tl.constexpr, STATS: tl.constexpr,
                       TRAIN: tl.constexpr, UPDATE: tl.constexpr, SHORTCUT: tl.constexpr, PREC: tl.constexpr,
                       BLOCK_P: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_HC: tl.constexpr, BLOCK_O: tl.constexpr):
    """(SEGMENT) z[:, seg0:seg0+O] += bn3(a3) + bn_s(hp_s), the previous unit's output (statistics pstats),
    in place; then (HEAD) h = [shortcut conv; branch conv1](z) with the concatenated weight w [HC, C], one
    GEMM over pixels, and (STATS) its batch statistics. Both are pixel-local: the head adds W[:, segment] @
    the update to W @ the z it read before changing it. SPLIT (backward's recomputation): z's channels from
    `split` on come from z_hi. (UPDATE) the previous unit's bn3 and bn_s running statistics."""
    g, img0, ntiles, tiles, count = _group(N, late, HW, BLOCK_P)
    dt = h.dtype.element_ty
    co = tl.arange(0, BLOCK_HC)
    comask = co < HC
    k = tl.arange(0, BLOCK_K)
    cu = tl.arange(0, BLOCK_O)
    cumask = cu < O
    if SEGMENT:
        eps = tl.load(consts)
        rm3, rv3 = _stats_set(rm3, rv3, srm3, srv3, O)
        rm_s, rv_s = _stats_set(rm_s, rv_s, srm_s, srv_s, O)
        _, _, scale3, shift3 = _bn_affine(pstats, g, VW, HS + 2 * M + cu, cu, cumask, count, gamma3, beta3, rm3, rv3,
                                          eps, TRAIN)
        if SHORTCUT:
            _, _, scale_s, shift_s = _bn_affine(pstats, g, VW, cu, cu, cumask, count, gamma_s, beta_s, rm_s, rv_s,
                                                eps, TRAIN)
        if HEAD:
            w_seg = tl.load(w + co[None, :] * C + seg0 + cu[:, None], mask=comask[None, :] & cumask[:, None], other=0.0)
    s1 = tl.zeros([BLOCK_P, BLOCK_HC], dtype=dt)
    s2 = tl.zeros([BLOCK_P, BLOCK_HC], dtype=dt)
    for t in range(tl.program_id(0), ntiles, tl.num_programs(0)):
        n, p, pmask = _tile(t, img0, tiles, HW, BLOCK_P)
        zb = n * C * HW
        acc = tl.zeros([BLOCK_P, BLOCK_HC], dtype=dt)
        if HEAD:
            for k0 in range(0, C, BLOCK_K):
                ck = k0 + k
                off = ck[None, :] * HW + p[:, None]
                m = pmask[:, None] & (ck[None, :] < C)
                if SPLIT:
                    zt = _load_two(z + zb + off, m & (ck[None, :] < split), z_hi + zb + off, m & (ck[None, :] >= split))
                else:
                    zt = tl.load(z + zb + off, mask=m, other=0.0)
                wt = tl.load(w + co[None, :] * C + ck[:, None], mask=comask[None, :] & (ck[:, None] < C), other=0.0)
                acc = _mm(zt, wt, acc, PREC)
        if SEGMENT:
            m2 = pmask[:, None] & cumask[None, :]
            off = cu[None, :] * HW + p[:, None]
            y = tl.load(a3 + n * O * HW + off, mask=m2, other=0.0) * scale3[None, :] + shift3[None, :]
            if SHORTCUT:
                y += tl.load(hp + n * HC * HW + off, mask=m2, other=0.0) * scale_s[None, :] + shift_s[None, :]
            y = tl.where(m2, y, 0.0)
            ptrs = z + zb + seg0 * HW + off
            old = tl.load(ptrs, mask=m2, other=0.0)
            tl.debug_barrier()  # the whole program has read this tile of z (the head's loop) before it changes
            tl.store(ptrs, old + y, mask=m2)
            if HEAD:
                acc = _mm(y, w_seg, acc, PREC)
        if HEAD:
            tl.store(h + n * HC * HW + co[None, :] * HW + p[:, None], acc, mask=pmask[:, None] & comask[None, :])
            if STATS:
                s1, s2 = _add_moments(s1, s2, acc)
    if HEAD:
        if STATS:
            _flush_sums(fstats, VW, co, comask, s1, s2)
    if SEGMENT:
        if UPDATE:
            if _updates_running(ntiles):
                _update_running_once(pstats, VW, HS + 2 * M, O, count, rm3, rv3, nbt3, consts, BLOCK_O)
                if SHORTCUT:
                    _update_running_once(pstats, VW, 0, O, count, rm_s, rv_s, nbt_s, consts, BLOCK_O)


@triton.jit(do_not_specialize=['N', 'late'])
def conv3x3_forward_kernel(h, w2, a2, fstats, consts, gamma1, beta1, rm1, rv1, srm1, srv1, nbt1,
                           HS, HC, M, VW, N, late,
                           H: tl.constexpr, W: tl.constexpr,
                           TRAIN: tl.constexpr, STATS: tl.constexpr, UPDATE: tl.constexpr, PREC: tl.constexpr,
                           BLOCK_P: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """a2 = conv3x3(relu(bn1(h_b))) as an implicit GEMM, one pipelined loop over the 9 taps with all 2o input
    channels; grid axis 2: blocks of BLOCK_N output channels; w2: this unit's [9, ci, co] weights. (STATS)
    a2's batch statistics; (UPDATE) bn1's running statistics."""
    HW: tl.constexpr = H * W
    g, img0, ntiles, tiles, count = _group(N, late, HW, BLOCK_P)
    rm1, rv1 = _stats_set(rm1, rv1, srm1, srv1, M)
    c = tl.arange(0, BLOCK_M)
    cmask = c < M
    cn = tl.program_id(2) * BLOCK_N + tl.arange(0, BLOCK_N)
    cnmask = cn < M
    _, _, scale1, shift1 = _bn_affine(fstats, g, VW, HS + c, c, cmask, count, gamma1, beta1, rm1, rv1,
                                      tl.load(consts), TRAIN)
    wmask = cmask[:, None] & cnmask[None, :]
    s1 = tl.zeros([BLOCK_P, BLOCK_N], dtype=a2.dtype.element_ty)
    s2 = tl.zeros([BLOCK_P, BLOCK_N], dtype=a2.dtype.element_ty)
    for t in range(tl.program_id(0), ntiles, tl.num_programs(0)):
        n, p, pmask = _tile(t, img0, tiles, HW, BLOCK_P)
        y = p // W
        x = p % W
        hb = h + (n * HC + HS) * HW
        acc = tl.zeros([BLOCK_P, BLOCK_N], dtype=a2.dtype.element_ty)
        for tap in range(9):
            dy = tap // 3 - 1
            dx = tap % 3 - 1
            valid = pmask & (y + dy >= 0) & (y + dy < H) & (x + dx >= 0) & (x + dx < W)
            m2 = valid[:, None] & cmask[None, :]
            hv = tl.load(hb + c[None, :] * HW + (p + dy * W + dx)[:, None], mask=m2, other=0.0)
            wt = tl.load(w2 + tap * M * M + c[:, None] * M + cn[None, :], mask=wmask, other=0.0)
            acc = _mm(_relu_affine(hv, scale1, shift1, m2), wt, acc, PREC)
        tl.store(a2 + n * M * HW + cn[None, :] * HW + p[:, None], acc, mask=pmask[:, None] & cnmask[None, :])
        if STATS:
            s1, s2 = _add_moments(s1, s2, acc)
    if STATS:
        _flush_sums(fstats, VW, HS + M + cn, cnmask, s1, s2)
    if UPDATE:
        if _updates_running(ntiles):
            _update_running_once(fstats, VW, HS, M, count, rm1, rv1, nbt1, consts, BLOCK_M)


@triton.jit(do_not_specialize=['N', 'late'])
def out_conv_forward_kernel(a2, w3, a3, fstats, consts, gamma2, beta2, rm2, rv2, srm2, srv2, nbt2,
                            HW, HS, M, O, VW, N, late,
                            TRAIN: tl.constexpr, STATS: tl.constexpr, UPDATE: tl.constexpr, PREC: tl.constexpr,
                            BLOCK_P: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_O: tl.constexpr):
    """a3 = conv1x1(relu(bn2(a2))), all 2o input channels in one block and W3 loaded once per program;
    (STATS) a3's batch statistics; (UPDATE) bn2's running statistics."""
    g, img0, ntiles, tiles, count = _group(N, late, HW, BLOCK_P)
    rm2, rv2 = _stats_set(rm2, rv2, srm2, srv2, M)
    c = tl.arange(0, BLOCK_M)
    cmask = c < M
    co = tl.arange(0, BLOCK_O)
    comask = co < O
    _, _, scale2, shift2 = _bn_affine(fstats, g, VW, HS + M + c, c, cmask, count, gamma2, beta2, rm2, rv2,
                                      tl.load(consts), TRAIN)
    wt = tl.load(w3 + co[None, :] * M + c[:, None], mask=comask[None, :] & cmask[:, None], other=0.0)
    s1 = tl.zeros([BLOCK_P, BLOCK_O], dtype=a3.dtype.element_ty)
    s2 = tl.zeros([BLOCK_P, BLOCK_O], dtype=a3.dtype.element_ty)
    for t in range(tl.program_id(0), ntiles, tl.num_programs(0)):
        n, p, pmask = _tile(t, img0, tiles, HW, BLOCK_P)
        m2 = pmask[:, None] & cmask[None, :]
        r2 = _relu_affine(tl.load(a2 + n * M * HW + c[None, :] * HW + p[:, None], mask=m2, other=0.0), scale2,
                          shift2, m2)
        acc = _mm(r2, wt, tl.zeros([BLOCK_P, BLOCK_O], dtype=a3.dtype.element_ty), PREC)
        tl.store(a3 + n * O * HW + co[None, :] * HW + p[:, None], acc, mask=pmask[:, None] & comask[None, :])
        if STATS:
            s1, s2 = _add_moments(s1, s2, acc)
    if STATS:
        _flush_sums(fstats, VW, HS + 2 * M + co, comask, s1, s2)
    if UPDATE:
        if _updates_running(ntiles):
            _update_running_once(fstats, VW, HS + M, M, count, rm2, rv2, nbt2, consts, BLOCK_M)


# --------------------------------------------------------------------------------------------- backward

@triton.jit(do_not_specialize=['seg0', 'N', 'late'])
def out_conv_backward_kernel(grad, seg0, a3, a2, h, w3, g_mid, g_head, fstats, rstats, consts,
                             gamma3, rm3, rv3, srm3, srv3, gamma2, beta2, rm2, rv2, srm2, srv2,
                             gamma_s, rm_s, rv_s, srm_s, srv_s, dw3,
                             C, HW, HS, HC, M, O, VW, N, late,
                             TRAIN: tl.constexpr, SHORTCUT: tl.constexpr, PREC: tl.constexpr,
                             BLOCK_P: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_M: tl.constexpr):
    """Backward of bn3 and the last 1x1 convolution: ga3 = bn3'(gy); g_mid = relu2'(ga3 @ W3) (the gradient
    arriving at bn2's output) with its bn2 reductions; dW3 = ga3^T relu(bn2(a2)); and the shortcut's
    bn_s'(gy) into g_head[:, :HS]."""
    g, img0, ntiles, tiles, count = _group(N, late, HW, BLOCK_P)
    rm3, rv3 = _stats_set(rm3, rv3, srm3, srv3, O)
    rm2, rv2 = _stats_set(rm2, rv2, srm2, srv2, M)
    rm_s, rv_s = _stats_set(rm_s, rv_s, srm_s, srv_s, O)
    eps = tl.load(consts)
    co = tl.arange(0, BLOCK_O)
    comask = co < O
    cj = tl.arange(0, BLOCK_M)
    cjmask = cj < M
    mean3, _, k3, k0_3, k1_3 = _bn_grad_affine(fstats, rstats, g, VW, HS + 2 * M + co, co, comask, count, gamma3,
                                               rm3, rv3, eps, TRAIN)
    mean2, inv2, scale2, shift2 = _bn_affine(fstats, g, VW, HS + M + cj, cj, cjmask, count, gamma2, beta2, rm2, rv2,
                                             eps, TRAIN)
    if SHORTCUT:
        mean_s, _, k_s, k0_s, k1_s = _bn_grad_affine(fstats, rstats, g, VW, co, co, comask, count, gamma_s, rm_s,
                                                     rv_s, eps, TRAIN)
    w = tl.load(w3 + co[:, None] * M + cj[None, :], mask=comask[:, None] & cjmask[None, :], other=0.0)
    gw = tl.zeros([BLOCK_O, BLOCK_M], dtype=w.dtype)
    s0 = tl.zeros([BLOCK_P, BLOCK_M], dtype=w.dtype)
    s1 = tl.zeros([BLOCK_P, BLOCK_M], dtype=w.dtype)
    for t in range(tl.program_id(0), ntiles, tl.num_programs(0)):
        n, p, pmask = _tile(t, img0, tiles, HW, BLOCK_P)
        mo = pmask[:, None] & comask[None, :]
        mj = pmask[:, None] & cjmask[None, :]
        off_o = co[None, :] * HW + p[:, None]
        off_m = cj[None, :] * HW + p[:, None]
        gy = tl.load(grad + (n * C + seg0) * HW + off_o, mask=mo, other=0.0)
        av3 = tl.load(a3 + n * O * HW + off_o, mask=mo, other=0.0)
        ga3 = tl.where(mo, _bn_grad(gy, av3, mean3, k3, k0_3, k1_3), 0.0)
        av2 = tl.load(a2 + n * M * HW + off_m, mask=mj, other=0.0)
        r2 = _relu_affine(av2, scale2, shift2, mj)
        gm = tl.where(r2 > 0, _mm(ga3, w, tl.zeros([BLOCK_P, BLOCK_M], dtype=w.dtype), PREC), 0.0)
        tl.store(g_mid + n * M * HW + off_m, gm, mask=mj)
        s0, s1 = _add_grad_moments(s0, s1, gm, av2, mean2, inv2)
        gw = _mm(tl.trans(ga3), r2, gw, PREC)
        if SHORTCUT:
            hv = tl.load(h + n * HC * HW + off_o, mask=mo, other=0.0)
            tl.store(g_head + n * HC * HW + off_o, _bn_grad(gy, hv, mean_s, k_s, k0_s, k1_s), mask=mo)
    tl.atomic_add(dw3 + co[:, None] * M + cj[None, :], gw, mask=comask[:, None] & cjmask[None, :], sem='relaxed')
    _flush_sums(rstats, VW, HS + M + cj, cjmask, s0, s1)


@triton.jit(do_not_specialize=['N', 'late'])
def conv3x3_backward_kernel(g_mid, a2, h, w2, g_head, dw2, fstats, rstats, consts,
                            gamma2, rm2, rv2, srm2, srv2, gamma1, beta1, rm1, rv1, srm1, srv1,
                            HS, HC, M, VW, N, late,
                            H: tl.constexpr, W: tl.constexpr, TRAIN: tl.constexpr, PREC: tl.constexpr,
                            BLOCK_P: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Backward of bn2 (applied on load of g_mid) and of the 3x3 convolution; grid axis 2 is the role, for
    NB = cdiv(2o, BLOCK_N). Role b < NB: the input gradient of input channels block b, as a transposed implicit
    GEMM (one pipelined loop over the taps; w2: this unit's [9, co, ci] weights), times relu1', stored in
    g_head[:, HS:] with its bn1 reductions. Role NB + NB * tap + b: dW2[co block b, :, tap] = bn2'(g_mid)^T @
    relu(bn1(h_b)) shifted by the tap (dw2: [co, ci, 3, 3])."""
    HW: tl.constexpr = H * W
    g, img0, ntiles, tiles, count = _group(N, late, HW, BLOCK_P)
    rm2, rv2 = _stats_set(rm2, rv2, srm2, srv2, M)
    rm1, rv1 = _stats_set(rm1, rv1, srm1, srv1, M)
    eps = tl.load(consts)
    c = tl.arange(0, BLOCK_M)
    cmask = c < M
    role = tl.program_id(2)
    blocks = tl.cdiv(M, BLOCK_N)
    cn = role % blocks * BLOCK_N + tl.arange(0, BLOCK_N)  # this role's block of channels
    cnmask = cn < M
    dt = g_head.dtype.element_ty
    if role < blocks:
        mean2, _, k2, k0_2, k1_2 = _bn_grad_affine(fstats, rstats, g, VW, HS + M + c, c, cmask, count, gamma2, rm2,
                                                   rv2, eps, TRAIN)
        mean1, inv1, scale1, shift1 = _bn_affine(fstats, g, VW, HS + cn, cn, cnmask, count, gamma1, beta1, rm1, rv1,
                                                 eps, TRAIN)
        wmask = cmask[:, None] & cnmask[None, :]
        s0 = tl.zeros([BLOCK_P, BLOCK_N], dtype=dt)
        s1 = tl.zeros([BLOCK_P, BLOCK_N], dtype=dt)
        for t in range(tl.program_id(0), ntiles, tl.num_programs(0)):
            n, p, pmask = _tile(t, img0, tiles, HW, BLOCK_P)
            y = p // W
            x = p % W
            acc = tl.zeros([BLOCK_P, BLOCK_N], dtype=dt)
            for tap in range(9):
                dy = tap // 3 - 1
                dx = tap % 3 - 1
                valid = pmask & (y - dy >= 0) & (y - dy < H) & (x - dx >= 0) & (x - dx < W)
                m2 = valid[:, None] & cmask[None, :]
                off = n * M * HW + c[None, :] * HW + (p - dy * W - dx)[:, None]
                gm = tl.load(g_mid + off, mask=m2, other=0.0)
                av = tl.load(a2 + off, mask=m2, other=0.0)
                ga2 = tl.where(m2, _bn_grad(gm, av, mean2, k2, k0_2, k1_2), 0.0)
                wt = tl.load(w2 + tap * M * M + c[:, None] * M + cn[None, :], mask=wmask, other=0.0)
                acc = _mm(ga2, wt, acc, PREC)
            mi = pmask[:, None] & cnmask[None, :]
            off1 = (n * HC + HS) * HW + cn[None, :] * HW + p[:, None]
            hv = tl.load(h + off1, mask=mi, other=0.0)
            g1 = tl.where(_relu_affine(hv, scale1, shift1, mi) > 0, acc, 0.0)
            tl.store(g_head + off1, g1, mask=mi)
            s0, s1 = _add_grad_moments(s0, s1, g1, hv, mean1, inv1)
        _flush_sums(rstats, VW, HS + cn, cnmask, s0, s1)
    else:
        mean2w, _, k2w, k0_2w, k1_2w = _bn_grad_affine(fstats, rstats, g, VW, HS + M + cn, cn, cnmask, count, gamma2,
                                                       rm2, rv2, eps, TRAIN)
        _, _, scale, shift = _bn_affine(fstats, g, VW, HS + c, c, cmask, count, gamma1, beta1, rm1, rv1, eps, TRAIN)
        tap = (role - blocks) // blocks
        dy = tap // 3 - 1
        dx = tap % 3 - 1
        gw = tl.zeros([BLOCK_N, BLOCK_M], dtype=dt)
        for t in range(tl.program_id(0), ntiles, tl.num_programs(0)):
            n, p, pmask = _tile(t, img0, tiles, HW, BLOCK_P)
            m2 = pmask[:, None] & cnmask[None, :]
            off = n * M * HW + cn[None, :] * HW + p[:, None]
            ga2 = tl.where(m2, _bn_grad(tl.load(g_mid + off, mask=m2, other=0.0), tl.load(a2 + off, mask=m2, other=0.0),
                                        mean2w, k2w, k0_2w, k1_2w), 0.0)
            y = p // W + dy
            x = p % W + dx
            ms = (pmask & (y >= 0) & (y < H) & (x >= 0) & (x < W))[:, None] & cmask[None, :]
            hv = tl.load(h + (n * HC + HS) * HW + c[None, :] * HW + (p + dy * W + dx)[:, None], mask=ms, other=0.0)
            gw = _mm(tl.trans(ga2), _relu_affine(hv, scale, shift, ms), gw, PREC)
        tl.atomic_add(dw2 + (cn[:, None] * M + c[None, :]) * 9 + tap, gw, mask=cnmask[:, None] & cmask[None, :],
                      sem='relaxed')


@triton.jit
def _head_backward_tiles(z, w, g_head, h, grad, a3p, hp, c, cmask, pseg0,
                         mean1, k1, k0_1, k1_1, mean3, inv3, mean_s, inv_s,
                         img0, ntiles, tiles, C, HW, HS, HC, O,
                         HEAD: tl.constexpr, SUMS: tl.constexpr, SHORTCUT: tl.constexpr, PREC: tl.constexpr,
                         BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_HC: tl.constexpr):
    """The tile loop of head_backward_kernel: (gw, s0, s3, ss), the head weight gradient of this block of z's
    channels and (SUMS) the per-thread sums of bn3's and bn_s's reductions of segment pseg0."""
    dt = grad.dtype.element_ty
    j = tl.arange(0, BLOCK_HC)
    jmask = j < HC
    jb = jmask & (j >= HS)  # the branch channels, normalised by bn1
    cu = c - pseg0  # the channel within segment pseg0 (SUMS)
    gw = tl.zeros([BLOCK_HC, BLOCK_C], dtype=dt)
    s0 = tl.zeros([BLOCK_P, BLOCK_C], dtype=dt)
    s3 = tl.zeros([BLOCK_P, BLOCK_C], dtype=dt)
    ss = tl.zeros([BLOCK_P, BLOCK_C], dtype=dt)
    for t in range(tl.program_id(0), ntiles, tl.num_programs(0)):
        n, p, pmask = _tile(t, img0, tiles, HW, BLOCK_P)
        mc = pmask[:, None] & cmask[None, :]
        off = c[None, :] * HW + p[:, None]
        gptr = grad + n * C * HW + off
        gy = tl.load(gptr, mask=mc, other=0.0)
        if HEAD:
            mj = pmask[:, None] & jmask[None, :]
            hoff = n * HC * HW + j[None, :] * HW + p[:, None]
            gh = tl.load(g_head + hoff, mask=mj, other=0.0)
            hv = tl.load(h + hoff, mask=pmask[:, None] & jb[None, :], other=0.0)
            gh = tl.where(jb[None, :], _bn_grad(gh, hv, mean1, k1, k0_1, k1_1), gh)
            gh = tl.where(mj, gh, 0.0)
            zt = tl.load(z + n * C * HW + off, mask=mc, other=0.0)
            gy += _mm(gh, w, tl.zeros([BLOCK_P, BLOCK_C], dtype=dt), PREC)
            tl.store(gptr, gy, mask=mc)
            gw = _mm(tl.trans(gh), zt, gw, PREC)
        if SUMS:
            s0 += gy
            s3 += gy * ((tl.load(a3p + n * O * HW + cu[None, :] * HW + p[:, None], mask=mc, other=0.0)
                         - mean3[None, :]) * inv3[None, :])
            if SHORTCUT:
                ss += gy * ((tl.load(hp + n * HC * HW + cu[None, :] * HW + p[:, None], mask=mc, other=0.0)
                             - mean_s[None, :]) * inv_s[None, :])
    return gw, s0, s3, ss


@triton.jit(do_not_specialize=['split', 'pseg0', 'N', 'late'])
def head_backward_kernel(z_lo, z_hi, split, w, g_head, h, grad, dw_s, dw_b, fstats, rstats, consts,
                         gamma1, rm1, rv1, srm1, srv1,
                         pseg0, a3p, hp, pfstats, prstats, rm3, rv3, srm3, srv3, rm_s, rv_s, srm_s, srv_s,
                         C, HW, HS, HC, M, O, VW, N, late,
                         HEAD: tl.constexpr, SUMS: tl.constexpr, TRAIN: tl.constexpr, SHORTCUT: tl.constexpr,
                         PREC: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_HC: tl.constexpr):
    """(HEAD) Backward of bn1 (on load of g_head[:, HS:]; g_head[:, :HS] already holds bn_s's input gradient)
    and of the head 1x1 convolutions (w: the concatenated [HC, C] weight): grad += g_head @ W in place in the
    layer's gradient buffer, dW = g_head^T z; grid axis 2 is the block of z's channels. (SUMS) The last block
    is segment pseg0's o channels, which the others skip: it also adds the bn3 and bn_s reductions of that
    segment's finished gradient (sum gy, sum gy * xhat3, sum gy * xhat_s) to prstats, from that unit's a3p and
    hp and its forward statistics pfstats. Without HEAD, only those reductions (the layer's last segment)."""
    g, img0, ntiles, tiles, count = _group(N, late, HW, BLOCK_P)
    eps = tl.load(consts)
    dt = grad.dtype.element_ty
    # Blocks of z's channels, none across `split` (z_lo below it, z_hi from it on: one pointer per block):
    # [0, lo) from z_lo, [split, C) from z_hi, and (SUMS) the last block, segment pseg0's O channels.
    block = tl.program_id(2)
    if SUMS:
        lo = pseg0
        last = block == tl.num_programs(2) - 1
    else:
        lo = split
        last = block < 0
    lo_blocks = tl.cdiv(lo, BLOCK_C)
    if last:
        c0, end, zp = pseg0, pseg0 + O, z_lo
    elif block < lo_blocks:
        c0, end, zp = block * BLOCK_C, lo, z_lo
    else:
        c0, end, zp = split + (block - lo_blocks) * BLOCK_C, C, z_hi
    c = c0 + tl.arange(0, BLOCK_C)
    cmask = c < end
    j = tl.arange(0, BLOCK_HC)
    jmask = j < HC
    jb = jmask & (j >= HS)
    mean1 = tl.zeros([BLOCK_HC], dtype=dt)
    k1 = mean1
    k0_1 = mean1
    k1_1 = mean1
    w_off = j[:, None] * C + c[None, :]
    if HEAD:
        rm1, rv1 = _stats_set(rm1, rv1, srm1, srv1, M)
        mean1, _, k1, k0_1, k1_1 = _bn_grad_affine(fstats, rstats, g, VW, j, j - HS, jb, count, gamma1, rm1, rv1,
                                                   eps, TRAIN)
        w = tl.load(w + w_off, mask=jmask[:, None] & cmask[None, :], other=0.0)
    cu = c - pseg0
    mean3 = tl.zeros([BLOCK_C], dtype=dt)
    inv3 = mean3
    mean_s = mean3
    inv_s = mean3
    if SUMS:
        rm3, rv3 = _stats_set(rm3, rv3, srm3, srv3, O)
        rm_s, rv_s = _stats_set(rm_s, rv_s, srm_s, srv_s, O)
        umask = cmask & last
        mean3, inv3 = _mean_invstd(pfstats, g, VW, HS + 2 * M + cu, cu, umask, count, rm3, rv3, eps, TRAIN)
        mean3, inv3 = mean3.to(dt), inv3.to(dt)
        if SHORTCUT:
            mean_s, inv_s = _mean_invstd(pfstats, g, VW, cu, cu, umask, count, rm_s, rv_s, eps, TRAIN)
            mean_s, inv_s = mean_s.to(dt), inv_s.to(dt)
    args = (zp, w, g_head, h, grad, a3p, hp, c, cmask, pseg0, mean1, k1, k0_1, k1_1,
            mean3, inv3, mean_s, inv_s, img0, ntiles, tiles, C, HW, HS, HC, O)
    if SUMS:
        if last:  # a loop of its own, so that only the segment's block pays for the reductions
            gw, s0, s3, ss = _head_backward_tiles(*args, HEAD, True, SHORTCUT, PREC, BLOCK_P, BLOCK_C, BLOCK_HC)
            _flush_sums(prstats, VW, HS + 2 * M + cu, umask, s0, s3)
            if SHORTCUT:
                _flush_sums(prstats, VW, cu, umask, s0, ss)
        else:
            gw, s0, s3, ss = _head_backward_tiles(*args, HEAD, False, SHORTCUT, PREC, BLOCK_P, BLOCK_C, BLOCK_HC)
    else:
        gw, s0, s3, ss = _head_backward_tiles(*args, HEAD, False, SHORTCUT, PREC, BLOCK_P, BLOCK_C, BLOCK_HC)
    if HEAD:
        wmask = jmask[:, None] & cmask[None, :]
        tl.atomic_add(dw_s + w_off, gw, mask=wmask & (j[:, None] < HS), sem='relaxed')
        tl.atomic_add(dw_b + w_off - HS * C, gw, mask=wmask & (j[:, None] >= HS), sem='relaxed')
