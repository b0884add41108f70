"""batcher: send a dataset of prompts to an OpenAI-compatible Chat Completions API,
rate-limited, retried and resumable."""

__version__ = "0.1.0"
