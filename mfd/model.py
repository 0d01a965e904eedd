"""Old import path of `mfd.modeling.pipeline`, kept because models registered before the layout change were
cloudpickled with references to `mfd.model`: this name is that module, so they still unpickle."""

import sys

from mfd.modeling import pipeline as _module

sys.modules[__name__] = _module
