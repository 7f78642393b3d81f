"""Smaller models: pruning, ONNX/TorchScript export and their study (stored formats: chopinbot.model.formats)."""
