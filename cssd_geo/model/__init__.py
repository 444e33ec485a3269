"""CSSD: layers, the module, and the model file format. Knows tensors, never scenes or CLIs."""
from ..config import POOLINGS, ModelConfig, Pooling
from .cssd import CSSD, distillation_loss
from .modelfile import load_model, read_model_metadata, save_model

__all__ = ["CSSD", "ModelConfig", "POOLINGS", "Pooling", "distillation_loss", "load_model", "read_model_metadata",
           "save_model"]
