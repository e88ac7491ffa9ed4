"""realtime-avatar: talk face to face with a digital twin, on a CPU, offline."""

import os

# Set before any onnxruntime session or hub client exists: the defaults must never phone home.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# mediapipe / TFLite log noise on stderr is not useful to a user.
os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

__version__ = "0.1.0"
