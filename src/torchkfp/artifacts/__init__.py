"""One home for every artifact format: names, writers and readers.

Stages import formats from here, never from each other:

- :mod:`~torchkfp.artifacts.folder`: the complete-or-visibly-not folder protocol shared by all
  kinds (``begin`` / ``commit`` / ``require``), GCS FUSE paths;
- :mod:`~torchkfp.artifacts.dataset`: Parquet shards per split (ingest writes; preprocess and
  evaluate read);
- :mod:`~torchkfp.artifacts.transform`: the fitted transform (preprocess writes; training,
  the model artifact and serving read);
- :mod:`~torchkfp.artifacts.features`: training-ready tensors per split (preprocess writes;
  training reads);
- :mod:`~torchkfp.artifacts.model`: the self-contained model (training writes; evaluation, the
  registries and serving read).

Every reader checks what it reads (it comes from outside: another run, a copy, a hand edit)
and raises :class:`~torchkfp.errors.ArtifactError` naming the artifact, the file and what is
wrong; nothing pickled is ever loaded (tensors are read weights-only).
"""

from torchkfp.artifacts.folder import (
    MARKER,
    METADATA,
    begin,
    check_fingerprint,
    commit,
    fuse_to_gcs,
    gcs_to_fuse,
    read_json_object,
    require,
    write_json,
)
from torchkfp.errors import ArtifactError

__all__ = [
    "MARKER",
    "METADATA",
    "ArtifactError",
    "begin",
    "check_fingerprint",
    "commit",
    "fuse_to_gcs",
    "gcs_to_fuse",
    "read_json_object",
    "require",
    "write_json",
]
