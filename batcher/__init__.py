"""batcher: send a dataset of prompts to an OpenAI-compatible Chat Completions API,
rate-limited, retried and resumable."""

__version__ = "0.1.0"

import logging as _logging

# A library logs; the application decides where to (the CLI's --verbose).
_logging.getLogger("batcher").addHandler(_logging.NullHandler())
