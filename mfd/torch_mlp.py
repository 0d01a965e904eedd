"""Old import path of `mfd.modeling.torch_mlp`, kept because models registered before the layout change were
cloudpickled with references to `mfd.torch_mlp`: this name is that module, so they still unpickle."""

import sys

from mfd.modeling import torch_mlp as _module

sys.modules[__name__] = _module
