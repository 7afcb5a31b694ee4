"""Layers and architectures over any cell: stacked and bidirectional ``RNNLayer``, the four
textbook architectures (each with an optional Conv1D front-end, ``ConvStack``), encodings
and embeddings, and Flax NNX wrappers."""

from seqlab.layers._conv import ACTIVATIONS as ACTIVATIONS
from seqlab.layers._conv import PADDINGS as PADDINGS
from seqlab.layers._conv import Conv1D as Conv1D
from seqlab.layers._conv import ConvStack as ConvStack
from seqlab.layers._conv import conv_stack as conv_stack
from seqlab.layers._encoding import SPECIAL_TOKENS as SPECIAL_TOKENS
from seqlab.layers._encoding import Embedding as Embedding
from seqlab.layers._encoding import LabelEncoder as LabelEncoder
from seqlab.layers._encoding import Vocabulary as Vocabulary
from seqlab.layers._encoding import one_hot as one_hot
from seqlab.layers._heads import dense_apply as dense_apply
from seqlab.layers._heads import dense_init as dense_init
from seqlab.layers._heads import last_valid_outputs as last_valid_outputs
from seqlab.layers._heads import masked_reduce as masked_reduce
from seqlab.layers._heads import sequence_cross_entropy as sequence_cross_entropy
from seqlab.layers._heads import valid_mask as valid_mask
from seqlab.layers._models import ARCHITECTURES as ARCHITECTURES
from seqlab.layers._models import Architecture as Architecture
from seqlab.layers._models import EncoderDecoder as EncoderDecoder
from seqlab.layers._models import ManyToMany as ManyToMany
from seqlab.layers._models import ManyToOne as ManyToOne
from seqlab.layers._models import OneToMany as OneToMany
from seqlab.layers._models import TokenDecoder as TokenDecoder
from seqlab.layers._models import TreeEncoder as TreeEncoder
from seqlab.layers._nnx import NNXModule as NNXModule
from seqlab.layers._rnn_layer import RNNLayer as RNNLayer

__all__ = [
    "RNNLayer",
    "ARCHITECTURES",
    "Architecture",
    "ManyToOne",
    "TreeEncoder",
    "ManyToMany",
    "EncoderDecoder",
    "OneToMany",
    "TokenDecoder",
    "Embedding",
    "Vocabulary",
    "LabelEncoder",
    "SPECIAL_TOKENS",
    "one_hot",
    "dense_init",
    "dense_apply",
    "last_valid_outputs",
    "masked_reduce",
    "sequence_cross_entropy",
    "valid_mask",
    "NNXModule",
    "Conv1D",
    "ConvStack",
    "conv_stack",
    "PADDINGS",
    "ACTIVATIONS",
]
