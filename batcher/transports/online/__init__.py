"""Online: rows sent as requests, as fast as the limits allow, each answer recorded as it comes.

- `runner`: the worker pool (`Runner`): admission, limits, retries, packing, answer reuse;
- `endpoints`: where requests go (`Endpoint`, `Router`: several endpoints chosen by free capacity,
  one that keeps failing rested, one refusing its key retired);
- `retry`: when a failed request is tried again and how long to wait (`RetryPolicy`, `Tries`).
"""
