"""Quantizers and tokenizers, one algorithm per file."""

from mmsid.quantizers.base import QuantizerOutput, nearest, sq_distances
from mmsid.quantizers.kmeans import KMeansConfig, kmeans
from mmsid.quantizers.mmq import MMQConfig
from mmsid.quantizers.mmq_tokenizer import MMQTokenizer
from mmsid.quantizers.opq import OPQConfig, OPQTokenizer
from mmsid.quantizers.psrq import PSRQConfig, PSRQTokenizer
from mmsid.quantizers.residual import ResidualQuantizer, ResidualQuantizerConfig
from mmsid.quantizers.rqkmeans import RQKMeansConfig, RQKMeansTokenizer
from mmsid.quantizers.rqvae import RQVAEConfig, RQVAETokenizer
from mmsid.quantizers.tokenizer import Tokenizer, tokenizer_for

__all__ = [
    "KMeansConfig",
    "MMQConfig",
    "MMQTokenizer",
    "OPQConfig",
    "OPQTokenizer",
    "PSRQConfig",
    "PSRQTokenizer",
    "QuantizerOutput",
    "RQKMeansConfig",
    "RQKMeansTokenizer",
    "RQVAEConfig",
    "RQVAETokenizer",
    "ResidualQuantizer",
    "ResidualQuantizerConfig",
    "Tokenizer",
    "kmeans",
    "nearest",
    "sq_distances",
    "tokenizer_for",
]
