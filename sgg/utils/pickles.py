"""Unpickling data-only pickles: builtins containers and scalars and numpy arrays, nothing that can run code."""

from __future__ import annotations

import io
import os
import pickle
from typing import Type

import numpy as np

from .errors import SGGError

__all__ = ["DATA_GLOBALS", "RefusedPickleError", "DataOnlyUnpickler", "unpickle_file"]

# The globals a pickle of dicts / lists / strings / numbers / numpy arrays references (numpy 1.x and 2.x names).
DATA_GLOBALS = frozenset({
    ("builtins", name) for name in ("set", "frozenset", "complex", "slice", "bytearray", "bytes", "range")
} | {
    ("collections", "OrderedDict"), ("_codecs", "encode"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
})


class RefusedPickleError(SGGError, pickle.UnpicklingError):
    """A pickle referenced a global outside the allow-list (e.g. ``os.system``) and was not loaded."""


class DataOnlyUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds :data:`DATA_GLOBALS` (and numpy's ``numpy.dtypes.*DType``); any other global
    raises :class:`RefusedPickleError` naming ``source``, the global, and ``allowed`` (what such files may hold) and
    ``advice``, as subclasses or callers set them. numpy 1.x pickles load under numpy 2."""

    allowed = "only dicts, lists, strings, numbers and numpy arrays are allowed"
    advice = ""

    def __init__(self, file, *, source: str = "<pickle>", encoding: str = "ASCII"):
        super().__init__(file, encoding=encoding)
        self._source = source

    def find_class(self, module: str, name: str):
        if (module, name) not in DATA_GLOBALS and not (module == "numpy.dtypes" and name.endswith("DType")):
            advice = f" {self.advice}" if self.advice else ""
            raise RefusedPickleError(f"Refusing to load '{self._source}': it references the global '{module}.{name}', "
                                     f"which is not allowed ({self.allowed}).{advice}")
        if module.startswith("numpy.core.") and int(np.__version__.split(".")[0]) >= 2:
            module = "numpy._core." + module[len("numpy.core."):]
        return super().find_class(module, name)


def unpickle_file(path: str, unpickler: Type[DataOnlyUnpickler], *, error: Type[Exception], missing: str,
                  corrupt: str):
    """Load the pickle at ``path`` with ``unpickler``. A missing file raises ``error(missing)``; a truncated or corrupt
    one ``error("Could not unpickle 'path' (Type: message); " + corrupt)``; :class:`RefusedPickleError` passes as is."""
    if not os.path.isfile(path):
        raise error(missing)
    with open(path, "rb") as f:
        data = f.read()
    try:
        return unpickler(io.BytesIO(data), source=path).load()
    except RefusedPickleError:
        raise
    except Exception as e:  # truncated / corrupt files raise all sorts of errors
        raise error(f"Could not unpickle '{path}' ({type(e).__name__}: {e}); {corrupt}") from e
