"""TFLite / LiteRT: conversion with litert-torch (`export.py`), ai-edge-quantizer recipes (`recipes.py`, data) and
their application (`quantize.py`)."""
