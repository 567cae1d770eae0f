"""MRT Studio engine: post-training integer quantization of MXNet models (MRT V2)."""

from .errors import MRTError

__all__ = ["MRTError"]
