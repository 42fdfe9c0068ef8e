"""layers: shared building blocks (transformer blocks, position encodings, MLPs)."""
from .language_model import LoRALanguageModel  # noqa: F401
from .mlp import MLP  # noqa: F401
from .optimal_transport import OTTemporalFusion, sinkhorn  # noqa: F401
from .position_encoding import PositionEmbeddingSine  # noqa: F401
from .progressive_refinement import (  # noqa: F401
    ProgressiveRefinement,
    reference_query_scores,
    select_reference_frames,
    top_reference_queries,
)
from .scene_aggregation import SpatialInformationAggregation, cluster_box_centres, frame_graph  # noqa: F401
from .spatial_temporal import SpatialTemporalTransformer, TemporalDecoderLayer, segment_index, unblock_empty  # noqa: F401
from .tracklet import GroupTransformerEncoder, group_batches, sinusoidal_positions  # noqa: F401
from .transformer import TransformerDecoderLayer, TransformerEncoder, TransformerEncoderLayer  # noqa: F401
from .vector_quantizer import VQVAE, VectorQuantizer  # noqa: F401
