"""Caption encoders for image-text pretraining: a local BERT-style model, mean-pooled, projected, L2-normalised."""

from fmscope.text.encoder import Stage, TextCacheInfo, TextEncoder, TextEncoderConfig
from fmscope.text.tokens import LRUCache, pad_token_ids

__all__ = ["LRUCache", "Stage", "TextCacheInfo", "TextEncoder", "TextEncoderConfig", "pad_token_ids"]
