"""meta_arch (filled by later issues; each module registers itself on import)."""
from . import keyframe_detector  # noqa: F401,E402,I001  (registers KeyframeDetector, KeyframeFeatureDetector)
from . import text_to_video  # noqa: F401,E402  (registers TextToVideoDiffusion)
from . import speaq, frequency_baseline  # noqa: F401,E402  (registers SpeaQ, IterativeSG, FrequencyBaseline)
from . import sttran, video_baselines  # noqa: F401,E402  (registers STTran, VideoFrequencyBaseline)
