"""Replicate's HTTP API, knowing nothing of the model that runs.

`http` (one connection pool per process, one account's requests, typed errors, the one retry
policy in `retry`) · `predictions` (create exactly once, get, cancel, list) · `files` (uploads,
output downloads) · `stream` (server-sent events) · `follow` (a run followed to its end) ·
`webhooks` (signed notifications) · `client` (them together for one token).
"""

from services.replicate.client import ReplicateClient
from services.replicate.http import HttpPool, Timeouts
from services.replicate.predictions import Created, Prediction

__all__ = ["Created", "HttpPool", "Prediction", "ReplicateClient", "Timeouts"]
