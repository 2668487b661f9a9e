"""Using trained networks: Torch7 import (convert_t7.py; torch7.py recognises the network in a file),
classification (classify.py), feature extraction (extract_features.py) and ONNX export (export_onnx.py);
load.py opens a model for all of them."""
