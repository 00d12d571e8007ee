"""Emotion read from the words: a ``transformers`` sequence-classification model whose own
labels are mapped onto the study's labels.

The model's classes (its ``config.id2label``) are mapped by the label-map mechanism of the
corpora (:func:`ser.data.labels.resolve_open_label_map`: common names such as ``joy`` →
``happy``, ``anger`` → ``angry``, overridable per class, ``null`` to drop one). A text's
probability of a study label is the summed softmax probability of the classes mapped to
it, renormalised over the mapped classes (classes mapped to nothing, e.g. ``surprise``
under the 4-class set, are left out); a study label no class maps to gets probability 0
and is listed in :attr:`TextEmotionModel.unmapped_labels`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from ser.data.labels import DEFAULT_LABELS, check_labels, resolve_open_label_map


class TextEmotionModel:
    """A text classifier from a hub id or a ``save_pretrained`` folder, on the study's labels.

    Args:
        model: hub id or local folder holding the model and its tokenizer.
        labels: the study's labels, in output order.
        label_map: overrides ``{model_class: study_label_or_None}``.
        device: torch device (``"cpu"``, ``"cuda"``, ``"auto"``).
        max_length: longest input in tokens (longer texts are truncated).

    Raises:
        ValueError: the model cannot be loaded, or none of its classes maps to a study label.
    """

    def __init__(self, model: str | os.PathLike[str], *, labels: Iterable[str] = DEFAULT_LABELS,
                 label_map: Mapping[str, str | None] | None = None, device: str = "cpu",
                 max_length: int = 128) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.labels = check_labels(labels)
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(model))
            self.model = AutoModelForSequenceClassification.from_pretrained(str(model)).to(self.device).eval()
        except (OSError, ValueError) as e:
            raise ValueError(f"text model {model!r}: cannot load a sequence classifier and its "
                             f"tokenizer (hub id or save_pretrained folder): {e}") from e
        classes = [str(self.model.config.id2label[i]) for i in range(self.model.config.num_labels)]
        self.class_map = resolve_open_label_map(classes, labels=self.labels, overrides=label_map,
                                                source=f"text model {model}")
        self._matrix = np.zeros((len(classes), len(self.labels)))
        for i, c in enumerate(classes):
            if self.class_map[c] is not None:
                self._matrix[i, self.labels.index(self.class_map[c])] = 1.0
        if not self._matrix.any():
            raise ValueError(f"text model {model!r}: none of its classes {classes} maps to the study's "
                             f"labels {list(self.labels)}; give label_map {{class: label}}")
        self.unmapped_labels = [lab for j, lab in enumerate(self.labels) if not self._matrix[:, j].any()]
        self.max_length = max_length

    def predict_proba(self, texts: Sequence[str], *, batch_size: int = 32) -> np.ndarray:
        """Study-label probabilities of each text, shape ``(len(texts), len(labels))``."""
        import torch

        out = np.zeros((len(texts), len(self.labels)))
        for i in range(0, len(texts), batch_size):
            enc = self.tokenizer(list(texts[i:i + batch_size]), padding=True, truncation=True,
                                 max_length=self.max_length, return_tensors="pt").to(self.device)
            with torch.inference_mode():
                p = torch.softmax(self.model(**enc).logits.float(), dim=-1).cpu().numpy()
            mass = p @ self._matrix
            out[i:i + len(mass)] = mass / np.clip(mass.sum(1, keepdims=True), 1e-12, None)
        return out
