"""The HTTP service over a tokenize run: its ID store, new-item assignment and, with a trained
parallel-SID retriever, recommendations that score the catalogue as it is in the store (items
assigned after training included).

    mmsid serve RUN [--retriever RETRIEVE_RUN] [--fusion auto|off|W,B] [--host 127.0.0.1]
        [--port 8000]

Endpoints (OpenAPI schema at ``/openapi.json``, pages at ``/docs``):

* ``GET /health``: the version, catalogue size, SID shape, whether a retriever is loaded and
  the content fusion it applies.
* ``GET /items/{item}``: the item's SID (404 when it has none).
* ``GET /sids/{prefix}``: items whose SID starts with ``prefix`` ("12-4"), at most ``limit``.
* ``POST /items``: assign SIDs to new items (:class:`mmsid.assign.Assigner`), all or none;
  with a token configured it needs ``Authorization: Bearer <token>``.
* ``POST /recommend``: a history of item ids -> the top-k items. With content fusion
  (``--fusion auto``, the default: the (w, b) the retriever's run chose on validation, see
  mmsid.retrieval.fusion) the score is the model's plus w x the content cosine with the last
  history item plus b for items the model never trained on (cold and added ones).
* ``POST /rank``: a history and candidate items -> click probabilities from a ``din-sid`` or
  ``mcca`` ranker trained on the run's IDs (an item added later: no id embedding, its SID's).

Bad input gets a 4xx whose ``detail`` names the field; a request body over ``max_body`` bytes
gets 413 before it is parsed. The service holds one store connection behind a lock (requests
run in FastAPI's thread pool); other processes may write the same store (SQLite serialises
writers) and are seen after the next write here or a restart.

Images are not accepted as file paths over HTTP (a client could name any server file): send
the image modality as a vector from the run's encoder (``embeddings``) instead.
"""

from mmsid.serve.app import create_app
from mmsid.serve.service import Service

__all__ = ["Service", "create_app"]
