"""Scripts around the port: the GPU check (gpu_check.sh, gpu_bundle.sh, gpu_summary.py) and synthetic CIFAR files."""
