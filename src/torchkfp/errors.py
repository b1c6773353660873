"""The errors a stage raises for a problem the user can fix; the CLI and the local runner show
each as one line (``error: ...``), never a traceback. Configuration errors are
:class:`torchkfp.config.ConfigError`."""


class DataValidationError(ValueError):
    """The data cannot be used as it is (empty, missing columns, single-class label, ...)."""


class ArtifactError(RuntimeError):
    """An input artifact is missing, incomplete or of the wrong kind."""


class TrainingError(RuntimeError):
    """The training processes failed, or a checkpoint cannot be resumed."""


class RegistryError(RuntimeError):
    """The model registry cannot find, register or deploy a model version."""


class ModelFactoryError(ValueError):
    """The configured model factory cannot be imported or does not build a usable module."""


USER_ERRORS = (DataValidationError, ArtifactError, TrainingError, RegistryError, ModelFactoryError)
"""Errors that mean "the input or the environment is wrong", as opposed to a bug."""
