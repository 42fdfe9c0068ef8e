"""backbone (filled by later issues; each module registers itself on import)."""
from . import efficientnet  # noqa: F401,E402,I001  (registers "EfficientNetB0")
from . import resnet, small_cnn  # noqa: F401,E402  (registers "ResNet", "SmallCNN")
