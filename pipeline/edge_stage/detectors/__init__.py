"""Detectors behind one interface (:mod:`.base`): third step of the edge data path.

``make_detector(settings)`` picks the one named by ``edge.detector``: TFLite CenterNet (float32 or
int8, :mod:`.tflite_centernet`) or OpenCV's HOG person detector (:mod:`.hog`). MediaPipe's bundled
face and pose models (:mod:`.mediapipe_extras`) enrich person crops; they are not detectors of
tracked objects.
"""

from pipeline.edge_stage.detectors.base import Detector, Roi, letterbox, make_detector

__all__ = ["Detector", "Roi", "letterbox", "make_detector"]
