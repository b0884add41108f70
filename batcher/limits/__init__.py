"""Limits: how fast requests may go, and how much a run may spend.

- `ratelimits`: the seam the workers call (`Limiter`: `acquire` before a request, `settle` after
  it, with a `Permit` and a `Verdict`), and `RateLimits`, one process's limits built from it;
- `pacing`: a rate and a burst as one number (`Pacer`, GCRA);
- `headers`: what a server announces in OpenAI's `x-ratelimit-*` headers (`announced`);
- `adaptive`: a limit nobody announced, found from the 429s (`AdaptiveRate`);
- `shared`: one key's limits shared by the processes on a machine (`SharedState`);
- `costs`: prices, and the budgets that stop a run (`Prices`, `Budget`, `PricedRows`).

Nothing here knows HTTP or a request kind: a limit sees tokens, answers and headers.
"""
