"""The one place the components' base image and decorator options are set."""

import functools

from kfp import dsl

from torchkfp.images import TRAINING_IMAGE

BASE_IMAGE = TRAINING_IMAGE

# install_kfp_package=False: the image (and the local venv) already has kfp and torchkfp;
# kfp's default would pip-install kfp before every task (~0.3 s each locally).
component = functools.partial(dsl.component, base_image=BASE_IMAGE, install_kfp_package=False)
