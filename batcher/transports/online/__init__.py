"""Online: rows sent as requests, as fast as the limits allow, each answer recorded as it comes.

- `runner`: the worker pool (`Runner`): admission, limits, retries, packing, answer reuse;
- `endpoints`: where requests go (`Endpoint`, `Router`: several endpoints chosen by free capacity,
  one that keeps failing rested, one refusing its key retired);
- `charges`: what a request is charged against, its endpoint's limits and the run's budget
  (`Charges`);
- `items`: a request in the pool, with the row or rows it carries (`Item`);
- `retry`: when a failed request is tried again and how long to wait (`RetryPolicy`, `Tries`).
"""
