"""Every measurement of the port, each a script run from the repository root with python -m benchmarks.NAME:
bench (training-step speed of the paths and options), memory_report (what autograd keeps per memory option),
loader (data loading speed), fused_kernels_compile and fused_grid_sweep (the fused Triton kernels). Results
are in results/, predictions and outcomes in NOTES.md."""
