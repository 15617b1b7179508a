"""nertron: named-entity recognition with XLM-RoBERTa token classifiers.

>>> from nertron import NER
>>> ner = NER("bundle/")                     # doctest: +SKIP
>>> ner("Angela Merkel met Emmanuel Macron in Paris.")  # doctest: +SKIP
"""

from .entity import Entity
from .pipeline import NER

__all__ = ["NER", "Entity"]
__version__ = "0.1.0"
