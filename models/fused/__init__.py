"""The fused Triton path of the GunnLayer (-kernels triton, experimental): the host side (layer) and the
kernels. models/gunn_layer.py's aten paths are the reference it is tested against."""
