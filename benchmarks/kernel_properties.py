"""What a compiled Triton kernel's code says about the latency problems of benchmarks/NOTES.md, read from its
TTGIR, PTX and SASS (no GPU needed): fenced atomics, software-pipelining of the loops that load tiles, float64
arithmetic inside loops. benchmarks/fused_kernels_compile.py prints them; the tests assert them for -kernels
triton2; benchmarks/gpu_profile.py reads the TTGIR the GPU's own Triton compiled.
"""
import os
import re
import subprocess
import tempfile

# PTX atomics with an ordering stronger than relaxed: each becomes a fence (MEMBAR.GPU) + atomic + L1
# invalidation (CCTL) in SASS
_ORDERED_ATOMIC = re.compile(r'^\s*(?:@%p\d+\s+)?(?:atom|red)\.\S*\.(?:acq_rel|acquire|release|sc)\b', re.M)
_GPU_FENCE = re.compile(r'\b(?:MEMBAR\.\S*(?:GPU|SYS)|CCTL\.IVALL)\b')
_SASS_LINE = re.compile(r'/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;')
_BRANCH = re.compile(r'(?:@!?U?P\w+\s+)?BRA\s+(?:!?U?P\d+,\s*)?(0x[0-9a-f]+)')
# float64 arithmetic: D* ALU instructions, the 64-bit MUFU seeds, conversions to or from float64
_FP64 = re.compile(r'^(?:@!?P\w+\s+)?(?:D(?:ADD|MUL|FMA|SETP|MNMX|SET)\b|MUFU\.\w+64H|(?:F2F|I2F|F2I)\S*F64)')
_LOOP_START = re.compile(r'^(\s*)(?:%\S+ = )?scf\.for\b.*\{\s*$')
_TILE_LOAD = re.compile(r'= tt\.load .*: tensor<\d+x\d+x')
_BUFFERS = re.compile(r'ttg\.memdesc_index %\S+\[[^\]]*\] : !ttg\.memdesc<(\d+)x\d+x\d+x')
_ASYNC_WAIT = re.compile(r'ttg\.async_wait .*\{num = (\d+) : i32\}')


def sass(cubin):
    """The SASS text of a cubin (cuobjdump, bundled with Triton)."""
    import triton
    cuobjdump = os.path.join(os.path.dirname(triton.__file__), 'backends', 'nvidia', 'bin', 'cuobjdump')
    with tempfile.NamedTemporaryFile(suffix='.cubin') as f:
        f.write(cubin)
        f.flush()
        return subprocess.run([cuobjdump, '-sass', f.name], capture_output=True, text=True, check=True).stdout


def fenced_atomics(ptx, sass_text):
    """Atomics that order memory (PTX) plus the GPU-scope fences and L1 invalidations around them (SASS)."""
    return len(_ORDERED_ATOMIC.findall(ptx)) + len(_GPU_FENCE.findall(sass_text))


def fp64_in_loops(sass_text):
    """float64 instructions inside any loop of the SASS (a loop: a backward branch and what it jumps over)."""
    code = [(int(address, 16), text) for address, text in _SASS_LINE.findall(sass_text)]
    loops = [(int(m.group(1), 16), address) for address, text in code
             for m in [_BRANCH.search(text)] if m and int(m.group(1), 16) <= address]
    return sum(1 for address, text in code if _FP64.match(text) and any(a <= address <= b for a, b in loops))


def tile_loops(ttgir):
    """The innermost loops of the TTGIR that load [pixels, channels] tiles, each as a dict: buffers (the
    fewest ring-buffer slots among its pipelined loads; 0 when none is pipelined), in_flight (the async copies
    its wait leaves in flight; 0: none overlap the product), synchronous (tile loads not pipelined)."""
    lines = ttgir.splitlines()
    loops = []
    for i, line in enumerate(lines):
        start = _LOOP_START.match(line)
        if not start:
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith(start.group(1) + '}'))
        body = lines[i + 1:end]
        if any(_LOOP_START.match(b) for b in body):
            continue  # not innermost
        buffers = [int(n) for b in body for n in _BUFFERS.findall(b)]
        waits = [int(n) for b in body for n in _ASYNC_WAIT.findall(b)]
        synchronous = sum(1 for b in body if _TILE_LOAD.search(b))
        if buffers or synchronous:
            loops.append(dict(buffers=min(buffers, default=0), in_flight=min(waits, default=0),
                              synchronous=synchronous))
    return loops


def ptxas_report(ptx, arch):
    """(registers, spilled bytes) per thread that ptxas reports for the kernel."""
    import triton
    ptxas = os.path.join(os.path.dirname(triton.__file__), 'backends', 'nvidia', 'bin', 'ptxas')
    with tempfile.NamedTemporaryFile('w', suffix='.ptx') as f:
        f.write(ptx)
        f.flush()
        text = subprocess.run([ptxas, '-v', f'--gpu-name=sm_{arch}a', f.name, '-o', os.devnull],
                              capture_output=True, text=True).stderr
    registers = re.search(r'Used (\d+) registers', text)
    spills = re.search(r'(\d+) bytes spill stores', text)
    return (int(registers.group(1)) if registers else -1), (int(spills.group(1)) if spills else -1)


def properties(compiled, arch=90):
    """Registers, spilled bytes, shared memory, fenced atomics, float64 instructions in loops and the tile
    loops of a compiled kernel."""
    registers, spills = ptxas_report(compiled.asm['ptx'], arch)
    sass_text = sass(compiled.asm['cubin'])
    return dict(registers=registers, spills=spills, shared=compiled.metadata.shared,
                fenced_atomics=fenced_atomics(compiled.asm['ptx'], sass_text), fp64_in_loops=fp64_in_loops(sass_text),
                loops=tile_loops(compiled.asm['ttgir']))
