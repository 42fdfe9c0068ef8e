"""The registered upstream-checkpoint converters (one module per upstream codebase); importing this package fills
:data:`sgg.checkpoint.convert.CHECKPOINT_CONVERTERS`. A new converter module is added to the imports below."""
from . import speaq, sttran  # noqa: F401
