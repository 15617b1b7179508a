"""nertron: named-entity recognition with XLM-RoBERTa token classifiers.

>>> from nertron import NER
>>> with NER() as ner:                                     # doctest: +SKIP
...     ner("Angela Merkel met Emmanuel Macron in Paris.")
[Entity(text='Angela Merkel', label='PER', start=0, end=13, score=0.99...), ...]

What runs the model is a backend spec: ``NER(backend=OnnxRuntime(threads=2))``, ``OpenVINO(precision="bf16")``
or ``Triton("host:8001")`` (``nertron.backends``).
"""

from nertron.backends import TLS, OnnxRuntime, OpenVINO, Triton
from nertron.backends.failover import ServedRows
from nertron.entity import Entity
from nertron.errors import (
    InvalidFile,
    InvalidType,
    InvalidValue,
    MissingExtra,
    ModelMismatch,
    NertronError,
    TritonError,
    TritonServerError,
    TritonUnavailable,
)
from nertron.ner import NER, NERConfig
from nertron.pipeline import Pipeline

__all__ = [
    "NER",
    "TLS",
    "Entity",
    "InvalidFile",
    "InvalidType",
    "InvalidValue",
    "MissingExtra",
    "ModelMismatch",
    "NERConfig",
    "NertronError",
    "OnnxRuntime",
    "OpenVINO",
    "Pipeline",
    "ServedRows",
    "Triton",
    "TritonError",
    "TritonServerError",
    "TritonUnavailable",
]
__version__ = "0.1.0"
