"""How many programs of a compiled kernel fit on one streaming multiprocessor at once (CUDA's occupancy rules):
what the fused kernels' persistent grids are sized by, and what benchmarks/fused_kernels_compile.py prints."""
import functools

import torch

# per SM, by compute capability: registers, warps, resident blocks, shared memory bytes (of which 1 KB is
# reserved per block); registers are allocated per warp in units of 256
SM_LIMITS = {80: (65536, 64, 32, 164 * 1024), 90: (65536, 64, 32, 228 * 1024)}
REGISTER_UNIT = 256
RESERVED_SHARED = 1024


def resident_programs(limits, registers, warps, shared):
    """(how many programs fit on one SM at once, the resource that limits them); limits as SM_LIMITS's."""
    registers_per_sm, max_warps, max_blocks, shared_per_sm = limits
    per_warp = -(-registers * 32 // REGISTER_UNIT) * REGISTER_UNIT
    fits = {'registers': registers_per_sm // (per_warp * warps),
            'shared memory': shared_per_sm // (shared + RESERVED_SHARED),
            'warps': max_warps // warps, 'blocks': max_blocks}
    limit = min(fits, key=fits.get)
    return fits[limit], limit


@functools.lru_cache(maxsize=None)
def device_limits(device):
    """SM_LIMITS's tuple for a CUDA device: the table's for its compute capability, else from its properties."""
    props = torch.cuda.get_device_properties(device)
    arch = props.major * 10 + props.minor
    if arch in SM_LIMITS:
        return SM_LIMITS[arch]
    return (props.regs_per_multiprocessor, props.max_threads_per_multi_processor // 32, 32,
            props.shared_memory_per_multiprocessor)
