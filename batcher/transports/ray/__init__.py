"""Ray: a job's rows read and sent on a Ray cluster (`--executor ray`, `batcher.ray.process`).

- `transport`: `RayTransport`, the driver; each worker runs the online pool on the rows Ray Data
  hands it, and the driver journals what they return;
- `inputs`: the input read by Ray Data where it lies (the driver plans, the cluster reads);
- `limits`: one rate limit for the cluster, a named actor handing out capacity in leases.

Ray is imported only here and in `batcher.ray`: plain batcher needs none of it. See docs/ray.md.
"""
