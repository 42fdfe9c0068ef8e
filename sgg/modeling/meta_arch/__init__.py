"""Meta-architectures in META_ARCH_REGISTRY, one model per file; each module registers itself on import."""

from . import (  # noqa: F401
    detr,  # DETR (the detector SpeaQ starts from)
    dsgdetr,  # DSGDETR
    easg_frequency,  # EASGFrequencyBaseline
    easg_linear,  # EASGLinear (EASG's linear baseline)
    frequency_baseline,  # FrequencyBaseline (image SGG)
    keyframe_detector,  # KeyframeDetector, KeyframeFeatureDetector
    oed,  # OED
    scenellm,  # SceneLLM
    speaq,  # SpeaQ, IterativeSG
    stket,  # STKET
    sttran,  # STTran
    sttran_easg,  # STTranEASG
    tempura,  # TEMPURA
    text_to_video,  # TextToVideoDiffusion
    video_baselines,  # VideoFrequencyBaseline
)
