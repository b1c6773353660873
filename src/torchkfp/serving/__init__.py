"""The HTTP prediction server: one FastAPI app that follows the Vertex AI custom-container
contract. Modules: :mod:`~torchkfp.serving.location` (which model, from where),
:mod:`~torchkfp.serving.requests` (parsing and validation), :mod:`~torchkfp.serving.app`
(the app and ``serve``).

Environment (set by Vertex AI; the defaults make the same container run anywhere):

- ``AIP_HTTP_PORT`` (default 8080): the port to listen on.
- ``AIP_HEALTH_ROUTE`` (default ``/health``): GET, 200 ``{"status": "ok"}`` once the model is
  loaded. The server binds its port first and loads the model in the background: meanwhile
  health answers 503 ``{"status": "loading", "seconds": s}`` and the predict and metadata
  routes 503 with ``Retry-After: 5``; a model that fails to load answers 503 ``{"status":
  "failed", "error": "..."}`` (paths hidden), is logged as one ERROR line, and the server
  exits with status 2 after ``TORCHKFP_LOAD_FAILURE_EXIT_S`` seconds (default 10), so that
  Vertex AI restarts the container or fails the deployment instead of waiting on it.
- ``AIP_PREDICT_ROUTE`` (default ``/predict``): POST, the prediction route.
- ``AIP_STORAGE_URI``: the model artifact folder. ``gs://bucket/path`` is read from the GCS FUSE
  mount ``/gcs/bucket/path`` when one is present, else downloaded once with google-cloud-storage
  into a temporary folder; a local path is used as it is.

Request (the shape ``Endpoint.predict(instances=...)`` sends)::

    {"instances": [{"dep_hour": 7, "distance": 1065, "carrier": "UA", ..., "temp": null}, ...],
     "parameters": {"threshold": 0.5}}            # optional

- the body is UTF-8 JSON (a byte order mark is allowed), sent with ``Content-Type:
  application/json`` (or ``*+json``, or no Content-Type at all), uncompressed; any other
  Content-Type, a charset other than UTF-8 or a Content-Encoding such as gzip gets 415;
- top level: ``instances`` and optionally ``parameters``, nothing else; a key repeated in any
  JSON object is refused (JSON parsers disagree on which value wins);
- every instance is an object holding every feature of the model (GET ``/metadata`` lists them
  with an example instance); unknown fields are refused, so a typo never passes silently;
- numeric features: a JSON number, a string holding a plain ASCII decimal number (``"12.5"``,
  ``"-3e2"``; no spaces, ``_`` or ``,`` separators), or ``null`` for an unknown value (the
  training data had missing values: the model's fitted transform imputes them exactly as in
  training). NaN and infinities, as numbers or strings, are refused: send ``null``; so are
  booleans. A value must lie within ``MAX_STANDARD_DEVIATIONS`` (10^6) training standard
  deviations of the training mean (``request.numeric_range`` in ``/metadata``): beyond it the
  value is a unit or typing error, and it would overflow the model's float32 input;
- categorical features: a string, a number, a boolean, or ``null``; values are matched to the
  training vocabulary by one rule (:func:`torchkfp.transform.category_key`, as in training and
  batch prediction): a number by its decimal form with integral values as integers (``1``,
  ``1.0`` and ``"1"`` are one category; ``1.5`` is ``"1.5"``), a string as it is (``"1.0"`` is
  not the number 1), ``true``/``false`` as ``"True"``/``"False"`` (not 1 and 0); values not
  seen in training fall into the model's "unknown" bucket.
  A string must be Unicode text: a lone surrogate (the JSON escape ``"\\ud800"``) is refused;
- ``parameters`` (optional, an object or null): ``threshold``, a JSON number in (0, 1) (0 and
  1 excluded; binary models), overrides the server's decision threshold.

Response: ``{"predictions": [...]}``, one object per instance, in order, by the model's task
kind: binary ``{"label": 1, "probability": 0.27}`` (the probability of the positive class, the
second of the model's two classes), multi-class ``{"label": "b", "probabilities": {"a": 0.1,
"b": 0.7, "c": 0.2}}``, regression ``{"value": 12.5}``. Class names are the label's own
values. Only ``predictions`` is returned: Vertex adds the deployed model id and version
itself (``aiplatform.Endpoint.predict`` returns them next to the predictions).

Errors never crash the server and never show a traceback: a refused request gets a JSON body
``{"error": "<what is wrong and how to fix it>", "details": ["instances[3].distance ...", ...]}``
(``details`` lists up to 20 per-field problems; names the client chose are quoted and
shortened). 400: not JSON, wrong shape, bad instance; 404/405: an unknown route or method
(``Allow`` lists the methods; every route answers OPTIONS, the GET routes HEAD); 408: the body
did not arrive within ``body_timeout_s``; 413: body larger than ``max_body_bytes`` or more than
``max_instances`` instances; 415: not uncompressed UTF-8 JSON; 503: the model is still loading
(or failed to load). 408, 413, 415 and 503 close the connection (the rest of the body is not
read). A client that hangs up mid-body is logged as one
INFO line. The server never answers NaN or infinity: inputs are range-checked, and should the
model still give a non-finite prediction the answer is 500 ``{"error": "the model gave no finite
prediction for instance(s) [...]..."}`` (the request was valid, the model is at fault).

Connections (``serve``, ``torchkfp serve`` options): an idle keep-alive connection is closed
after ``--keep-alive-timeout`` s; above ``--max-connections`` open connections uvicorn answers a
plain-text 503 Service Unavailable and closes the connection; a request head (request line and
headers) still incomplete past 64 KiB, or bytes that are not HTTP, get uvicorn's plain-text 400
(the app never sees them).

GET ``/metadata`` is unauthenticated: it shows the model's identity (registry version, data
fingerprint, code version, training summary) but no filesystem paths or storage URIs.

Runtime (``torchkfp serve --runtime``, else ``TORCHKFP_SERVING_RUNTIME``, default ``torch``):
``torch`` runs the network built from the weights, ``onnx`` the artifact's ``model.onnx`` (exported
and checked against PyTorch at training time) on ONNX Runtime; both answer alike to 1e-5. A model
without an ONNX export on ``onnx`` fails to load as above (503 ``failed`` naming the reason
training recorded, then exit 2). ``GET /metadata`` names the runtime.

Latency: a request of at most :data:`~torchkfp.predictor.FAST_PATH_MAX_ROWS` instances takes the
row-wise transform (validated values straight to arrays, the same arrays as the pandas transform),
a larger one the vectorized pandas transform. A body of at most ``INLINE_BODY_BYTES`` (16 KiB, a
dozen instances) is answered on the event loop (a fraction of a millisecond); a larger one in a
worker thread (at most ``inference_threads`` at once) so the event loop keeps answering health
checks. ``serve`` pins the runtime to a small number of intra-op threads
(``TORCHKFP_TORCH_THREADS``, default 1, for torch and ONNX Runtime alike) so concurrent requests
do not oversubscribe cores.
"""

from torchkfp.serving.app import create_app, serve
from torchkfp.serving.location import ServeError, localize_model, resolve_model
from torchkfp.serving.requests import BadRequest

__all__ = ["BadRequest", "ServeError", "create_app", "localize_model", "resolve_model", "serve"]
