"""pareco_runtime: load a slimmable network and its Pareto front, pick and switch sub-networks.

Depends on torch and safetensors only; training, export and benchmarking live in other packages.
"""

from .models import ARCHITECTURES, SlimmableNet, build_model
from .slicing import slice_model
from .space import WidthSpace

__version__ = "0.1.0"

__all__ = ["ARCHITECTURES", "SlimmableNet", "WidthSpace", "build_model", "slice_model", "__version__"]
