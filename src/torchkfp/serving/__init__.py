"""The HTTP prediction server: one FastAPI app that follows the Vertex AI custom-container
contract. Modules: :mod:`~torchkfp.serving.location` (which model, from where),
:mod:`~torchkfp.serving.requests` (parsing and validation), :mod:`~torchkfp.serving.app`
(the app and ``serve``).

Environment (set by Vertex AI; the defaults make the same container run anywhere):

- ``AIP_HTTP_PORT`` (default 8080): the port to listen on.
- ``AIP_HEALTH_ROUTE`` (default ``/health``): GET, 200 once the model is loaded.
- ``AIP_PREDICT_ROUTE`` (default ``/predict``): POST, the prediction route.
- ``AIP_STORAGE_URI``: the model artifact folder. ``gs://bucket/path`` is read from the GCS FUSE
  mount ``/gcs/bucket/path`` when one is present, else downloaded once with google-cloud-storage
  into a temporary folder; a local path is used as it is.

Request (the shape ``Endpoint.predict(instances=...)`` sends)::

    {"instances": [{"dep_hour": 7, "distance": 1065, "carrier": "UA", ..., "temp": null}, ...],
     "parameters": {"threshold": 0.5}}            # optional

- every instance is an object holding every feature of the model (GET ``/metadata`` lists them
  with an example instance); unknown fields are refused, so a typo never passes silently;
- numeric features: a JSON number, a string holding a number (``"12.5"``), or ``null`` for an
  unknown value (the training data had missing values: the model's fitted transform imputes
  them exactly as in training). NaN and infinities are refused: send ``null``;
- categorical features: a string, a number (matched as its string form: ``1`` is ``"1"``), a
  boolean, or ``null``; values not seen in training fall into the model's "unknown" bucket;
- ``parameters.threshold`` (optional, in (0, 1); binary models) overrides the server's
  decision threshold.

Response: ``{"predictions": [...]}``, one object per instance, in order, by the model's task
kind: binary ``{"label": 1, "probability": 0.27}`` (the probability of the positive class, the
second of the model's two classes), multi-class ``{"label": "b", "probabilities": {"a": 0.1,
"b": 0.7, "c": 0.2}}``, regression ``{"value": 12.5}``. Class names are the label's own
values. Only ``predictions`` is returned: Vertex adds the deployed model id and version
itself (``aiplatform.Endpoint.predict`` returns them next to the predictions).

Errors never crash the server: a bad request gets a 4xx JSON body
``{"error": "<what is wrong and how to fix it>", "details": ["instances[3].distance ...", ...]}``
(``details`` lists up to 20 per-field problems). 400: not JSON, wrong shape, bad instance;
413: body larger than ``max_body_bytes`` or more than ``max_instances`` instances.

Inference is CPU-bound: it runs in worker threads (at most ``inference_threads`` at once) so the
event loop keeps answering health checks, and ``serve`` pins torch to a small number of intra-op
threads (``TORCHKFP_TORCH_THREADS``, default 1) so concurrent requests do not oversubscribe cores.
"""

from torchkfp.serving.app import create_app, serve
from torchkfp.serving.location import ServeError, localize_model, resolve_model
from torchkfp.serving.requests import BadRequest

__all__ = ["BadRequest", "ServeError", "create_app", "localize_model", "resolve_model", "serve"]
