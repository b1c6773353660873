"""Container images: named here and only here (the compiler and the Dockerfiles refer to these).

Override at compile time with TORCHKFP_TRAINING_IMAGE / TORCHKFP_SERVING_IMAGE or per config
with ``vertex.training_image`` / ``vertex.serving_image``.
"""

import os

DEFAULT_TRAINING_IMAGE = "us-docker.pkg.dev/YOUR_PROJECT/torchkfp/torchkfp-train:0.1.0"
DEFAULT_SERVING_IMAGE = "us-docker.pkg.dev/YOUR_PROJECT/torchkfp/torchkfp-serve:0.1.0"

TRAINING_IMAGE = os.environ.get("TORCHKFP_TRAINING_IMAGE", DEFAULT_TRAINING_IMAGE)
SERVING_IMAGE = os.environ.get("TORCHKFP_SERVING_IMAGE", DEFAULT_SERVING_IMAGE)
