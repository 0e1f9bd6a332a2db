"""CoreML: `torch.export` + coremltools to ML Programs (`export.py`), recipes (`recipes.py`, data) and the weight and
activation compression that applies them (`quantize.py`)."""
