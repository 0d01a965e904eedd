"""Old import path of `mfd.modeling.tree_predictor`, kept because models registered before the layout change were
cloudpickled with references to `mfd.tree_predictor`: this name is that module, so they still unpickle."""

import sys

from mfd.modeling import tree_predictor as _module

sys.modules[__name__] = _module
