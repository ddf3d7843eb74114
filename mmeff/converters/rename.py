"""The one way mmeff renames checkpoint keys: ordered regex rules, and the classifier layout built on them.

A rule is ``(pattern, replacement)`` as ``re.sub`` takes them (the replacement may use ``\\1`` or be a
function of the match). Converters come in two kinds, hence two ways to apply rules:

- :func:`rename`: every rule in turn edits the key (a chain of edits; a key no rule touches stays). The
  timm and HF CvT converters and the per-part maps of the official RT-DETR checkpoints are such chains.
- :func:`lookup`: the first rule whose pattern matches the whole key gives the new name, and a key no
  rule matches has none (``None``), so that a converter can refuse keys it does not know (RT-DETR).

:func:`to_classifier` is the loop every timm/HF classifier converter shares: rename, change the tensors
whose layout differs, and put each key under the ``ImageClassifier``'s ``backbone.`` or ``head.``.
"""
import re
from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

from torch import Tensor

StateDict = Mapping[str, Tensor]
Rule = Tuple[str, Union[str, Callable[[re.Match], str]]]  # re.sub pattern, replacement
Reshape = Tuple[str, Callable[[Tensor], Tensor]]  # re.search pattern on the source key, new tensor


def rename(key: str, rules: Sequence[Rule]) -> str:
    """``key`` after ``re.sub(pattern, replacement, key)`` of every rule, in order."""
    for pattern, replacement in rules:
        key = re.sub(pattern, replacement, key)
    return key


def lookup(key: str, rules: Sequence[Rule]) -> Optional[str]:
    """The new name of ``key`` by the first rule whose pattern matches all of it; None if none does."""
    for pattern, replacement in rules:
        if re.fullmatch(pattern, key):
            return re.sub(pattern, replacement, key)
    return None


def to_classifier(state_dict: StateDict, rules: Sequence[Rule] = (),
                  reshapes: Sequence[Reshape] = ()) -> Dict[str, Tensor]:
    """A classifier's state dict in the layout of an mmpretrain ``ImageClassifier``.

    Each key is renamed by ``rules``; a key that then starts with ``head.`` belongs to the head, every
    other one gets ``backbone.``. Each ``reshapes`` entry whose pattern occurs in the source key
    replaces the tensor (e.g. a 1x1 conv's weight for a linear layer's).
    """
    converted = {}
    for key, value in state_dict.items():
        for pattern, reshape in reshapes:
            if re.search(pattern, key):
                value = reshape(value)
        new_key = rename(key, rules)
        converted[new_key if new_key.startswith('head.') else 'backbone.' + new_key] = value
    return converted
