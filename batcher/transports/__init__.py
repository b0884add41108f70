"""Transports: how a session's rows become answers, each recorded the same way.

A transport (`base.Transport`) is handed the rows left to send and gives every one of them,
answered or failed, to the session's `Recorder`, so whatever the transport a run directory has the
same files, resumes the same way and reports the same summary. Three meet the seam:

- `online/`: the worker pool (`Runner`) sending requests under the rate limits, with retries, to
  one endpoint or several (`Router`);
- `batchapi/`: the provider's Batch API (`BatchTransport`): files uploaded, batches created,
  polled, collected, at half the price;
- `ray/`: a Ray cluster (`RayTransport`) whose workers each run the online pool under one limit.

Shared by all three: `base` (the seam, the rows left), `recording` (`Recorder`), `stops` (the stop
state of a run and the failures that stop it) and `client` (`ApiClient`, one request over aiohttp).
The online pool and the Batch API never import each other; Ray builds on the online pool.
"""
