from . import aifi, ccff, hybrid_encoder, simple_feature_pyramid
