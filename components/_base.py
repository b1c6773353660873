"""The one place the components' base image and decorator options are set."""

import functools

from kfp import dsl

from torchkfp.images import PLACEHOLDER_TRAINING_IMAGE

BASE_IMAGE = PLACEHOLDER_TRAINING_IMAGE
"""A placeholder, never run: the image is configuration (``vertex.training_image``), which the
Vertex pipeline sets on every task when it is compiled (:func:`torchkfp.images.with_images`);
``torchkfp submit`` refuses a pipeline that still names a placeholder. Local runs (kfp.local's
subprocess runner) ignore it."""

# install_kfp_package=False: the image (and the local venv) already has kfp and torchkfp;
# kfp's default would pip-install kfp before every task (~0.3 s each locally).
component = functools.partial(dsl.component, base_image=BASE_IMAGE, install_kfp_package=False)
