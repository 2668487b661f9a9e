"""Using trained networks: Torch7 import (torch7.py, convert_t7.py), classification (classify.py), feature
extraction (extract_features.py) and ONNX export (export_onnx.py); load.py opens a model for all of them."""
