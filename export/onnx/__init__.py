"""ONNX: the TorchScript exporter + onnxsim (`export.py`), onnxruntime quantization recipes (`recipes.py`, data) and
their application (`quantize.py`), and the graph rewrites done on the ONNX files (`rewrite.py`)."""
