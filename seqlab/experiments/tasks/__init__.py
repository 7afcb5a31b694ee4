"""The task registry: every task an experiment can name in ``task=``.

adding       many-to-one regression   the adding problem (generated)
copy_memory  many-to-many / -to-one   copy-memory (generated)
digits       many-to-one classes      scikit-learn digits, rows or pixels
forecast     many-to-one regression   statsmodels sunspots or CO2, naive baseline
sentiment    many-to-one classes      IMDB reviews from a local aclImdb folder
tagging      many-to-many classes     Python source characters, or a CoNLL file
dates        encoder-decoder          human dates to ISO format
chars        one-to-many              character generation from a text
listops      tree / many-to-one       ListOps expressions, as parse trees or flat tokens
treebank     tree, every node         sentiment over bracketed trees (SST layout, local)
moving_digits many-to-many frames     scikit-learn digits bouncing in 32x32 frames, next frame
"""

from seqlab.experiments.tasks import _series as _series
from seqlab.experiments.tasks import _synthetic as _synthetic
from seqlab.experiments.tasks import _text as _text
from seqlab.experiments.tasks import _trees as _trees
from seqlab.experiments.tasks import _video as _video
from seqlab.experiments.tasks._base import KINDS as KINDS
from seqlab.experiments.tasks._base import Task as Task
from seqlab.experiments.tasks._base import TaskData as TaskData
from seqlab.experiments.tasks._base import get as get
from seqlab.experiments.tasks._base import register as register
from seqlab.experiments.tasks._base import registered as registered
from seqlab.experiments.tasks._series import DigitsData as DigitsData
from seqlab.experiments.tasks._series import ForecastData as ForecastData
from seqlab.experiments.tasks._series import load_series as load_series
from seqlab.experiments.tasks._synthetic import ADDING_BASELINE_MSE as ADDING_BASELINE_MSE
from seqlab.experiments.tasks._synthetic import AddingData as AddingData
from seqlab.experiments.tasks._synthetic import CopyMemoryData as CopyMemoryData
from seqlab.experiments.tasks._synthetic import adding_problem as adding_problem
from seqlab.experiments.tasks._synthetic import copy_memory as copy_memory
from seqlab.experiments.tasks._text import CharsData as CharsData
from seqlab.experiments.tasks._text import DatesData as DatesData
from seqlab.experiments.tasks._text import SentimentData as SentimentData
from seqlab.experiments.tasks._text import TaggingData as TaggingData
from seqlab.experiments.tasks._text import human_dates as human_dates
from seqlab.experiments.tasks._text import python_char_tags as python_char_tags
from seqlab.experiments.tasks._text import read_aclimdb as read_aclimdb
from seqlab.experiments.tasks._text import read_conll as read_conll
from seqlab.experiments.tasks._text import tokenize_review as tokenize_review
from seqlab.experiments.tasks._trees import ListOpsData as ListOpsData
from seqlab.experiments.tasks._trees import TreebankData as TreebankData
from seqlab.experiments.tasks._trees import listops_expression as listops_expression
from seqlab.experiments.tasks._trees import listops_value as listops_value
from seqlab.experiments.tasks._trees import read_treebank as read_treebank
from seqlab.experiments.tasks._video import MovingDigitsData as MovingDigitsData
from seqlab.experiments.tasks._video import moving_digits as moving_digits

__all__ = [
    "AddingData",
    "CharsData",
    "CopyMemoryData",
    "DatesData",
    "DigitsData",
    "ListOpsData",
    "MovingDigitsData",
    "ForecastData",
    "SentimentData",
    "TaggingData",
    "TreebankData",
    "ADDING_BASELINE_MSE",
    "KINDS",
    "Task",
    "TaskData",
    "adding_problem",
    "moving_digits",
    "copy_memory",
    "get",
    "human_dates",
    "listops_expression",
    "listops_value",
    "load_series",
    "python_char_tags",
    "read_aclimdb",
    "read_conll",
    "read_treebank",
    "register",
    "registered",
    "tokenize_review",
]
