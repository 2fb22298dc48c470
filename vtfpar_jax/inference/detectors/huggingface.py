"""Object-detection checkpoints of transformers (DETR, RT-DETR, ...) kept to their person class.

    --detector hf:PekingU/rtdetr_r18vd        # a Hub id: downloaded on first use, then cached
    --detector hf:./my_detector               # a folder written by save_pretrained

`AutoModelForObjectDetection` with the checkpoint's own image processor, which
resizes and normalises the frame and decodes the outputs into boxes in the
frame's pixels (`post_process_object_detection`, at the score threshold). Only
the class the checkpoint's `id2label` calls 'person' is kept. Runs with torch
on the CPU (transformers 5 has no Flax models).
"""

from __future__ import annotations

import numpy as np

from vtfpar_jax.errors import reason
from vtfpar_jax.inference.detectors import base


class HuggingFaceDetector(base.LearnedDetector):
    """A transformers object-detection checkpoint (Hub id or folder), its person class."""

    source_hint = "a Hub id or a folder, hf:ID_OR_FOLDER"

    def __init__(self, source: str, score_threshold: float = base.SCORE_THRESHOLD):
        transformers = base.import_extra("transformers")
        self._torch = base.import_extra("torch")
        try:
            self._processor = transformers.AutoImageProcessor.from_pretrained(source)
            self._model = transformers.AutoModelForObjectDetection.from_pretrained(source).eval()
        except (OSError, ValueError) as e:
            # Offline, a mistyped id, a folder without a checkpoint: one line that says which.
            raise base.DetectorError(
                f"cannot load an object-detection checkpoint ({reason(e)}); give a Hub id "
                "reachable from here (weights are downloaded on first use) or a local folder "
                "written by save_pretrained") from None
        people = [int(i) for i, name in self._model.config.id2label.items()
                  if str(name).lower() == "person"]
        if len(people) != 1:
            raise base.DetectorError(f"id2label has {len(people)} 'person' classes; expected one")
        self.person_class = people[0]
        self.score_threshold = score_threshold
        self.description = (f"hf:{source} ({type(self._model).__name__}, class "
                            f"{self.person_class}, score >= {score_threshold:g})")

    def __call__(self, frame: np.ndarray) -> base.Boxes:
        inputs = self._processor(images=frame, return_tensors="pt")
        with self._torch.no_grad():
            outputs = self._model(**inputs)
        found = self._processor.post_process_object_detection(
            outputs, threshold=self.score_threshold, target_sizes=[frame.shape[:2]])[0]
        person = found["labels"].numpy() == self.person_class
        return base.Boxes(found["boxes"].numpy()[person], found["scores"].numpy()[person])
