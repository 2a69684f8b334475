"""pareco_runtime: load a slimmable network and its Pareto front, pick and switch sub-networks.

Depends on torch and safetensors only; training, export and benchmarking live in other packages.
"""

from .budget import BatteryPolicy, Choice, parse_budget
from .convert import ConversionError, make_slimmable
from .manifest import DeviceProfile, Front, FrontPoint, Variant
from .models import ARCHITECTURES, SlimmableNet, build_model
from .runtime import SlimmableRuntime
from .slicing import slice_model
from .space import WidthSpace

__version__ = "0.1.0"

__all__ = [
    "ARCHITECTURES",
    "BatteryPolicy",
    "Choice",
    "ConversionError",
    "DeviceProfile",
    "Front",
    "FrontPoint",
    "SlimmableNet",
    "SlimmableRuntime",
    "Variant",
    "WidthSpace",
    "__version__",
    "build_model",
    "make_slimmable",
    "parse_budget",
    "slice_model",
]
