"""Smaller models: pruning, int8 and fp16 storage, ONNX and TorchScript export, and their study."""
