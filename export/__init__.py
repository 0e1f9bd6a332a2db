"""pocketsam's export side (torch and the converters; `pip install pocketsam[export]`): the MobileSAM model
(`model/`), its two exportable graphs and their rewrites (`graphs`, `encoder_rewrite`, `decoder_rewrite`), one
subpackage per format (`onnx/`, `tflite/`, `coreml/`: export, recipes, quantization), the format registry
(`formats`), the bundle writer, checkpoints, calibration photos, the PyTorch reference sessions and the fp16 audit.

Nothing here is imported by `pocketsam.runtime`; the CLI imports only `formats` until a command exports.
"""
