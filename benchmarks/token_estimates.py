"""Where the dry run's characters-a-token figure comes from: OpenAI's tokenizers on the shipped jobs.

    pip install bpe-openai        # cl100k and o200k, bundled (no download); not a batcher dependency
    python benchmarks/token_estimates.py

For each shipped job (jobs/*.toml) it builds every request as a run would, and counts the text of
its prompts, of its structured-output schema and of the simulator's answers three ways: characters,
OpenAI's tokenizer for the job's model (o200k for gpt-4o-mini, cl100k for text-embedding-3-small),
and the simulator's tokenizer (batcher/simulator/tokens.py). Prints one table: the characters a
token that tokens.CHARS_PER_TOKEN stands for, and how far the simulator's counts are from the real
ones. docs/estimates.md holds the figures and what was decided from them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from batcher.job import build_job  # noqa: E402
from batcher.job.files import load_job_file  # noqa: E402
from batcher.kinds.tokens import compact_json, schema_of  # noqa: E402
from batcher.prepare import prepare  # noqa: E402
from batcher.simulator.answers import complete  # noqa: E402
from batcher.simulator.tokens import count_tokens, json_tokens  # noqa: E402

JOBS = ["classify-reviews", "extract-review-facts", "summarize-articles", "embed-articles"]


def encoding_for(model: str):
    try:
        import bpe_openai
    except ImportError:
        sys.exit("needs bpe-openai (pip install bpe-openai): OpenAI's tokenizers, bundled offline")
    return bpe_openai.get_encoding("cl100k_base" if "embedding" in model else "o200k_base")


def bodies_of(name: str) -> tuple[object, list[dict]]:
    settings = load_job_file(ROOT / "jobs" / f"{name}.toml")
    job = build_job({**settings, "output": "/nonexistent/never-written"})
    source, kind = prepare(job)
    bodies: list[dict] = []
    source.scan(kind.builder, "", lambda number, row_id, body: bodies.append(body))
    return job, bodies


def texts_of(bodies: list[dict]) -> dict[str, list[str]]:
    """The prompts' texts, the schema (once) and the simulator's answers of a job's requests."""
    if "input" in bodies[0]:
        return {"prompts": [b["input"] for b in bodies]}
    texts = {"prompts": [m["content"] for b in bodies for m in b["messages"]]}
    schema = schema_of(bodies[0])
    if schema is not None:
        texts["schema"] = [compact_json(schema)]
    texts["answers"] = [complete(b, 0)["choices"][0]["message"]["content"] for b in bodies]
    return texts


def main() -> None:
    columns = ["job", "text", "characters", "OpenAI tokens", "characters a token", "simulator tokens"]
    print("| " + " | ".join([*columns, "simulator / OpenAI"]) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for name in JOBS:
        job, bodies = bodies_of(name)
        encoding = encoding_for(job.model)
        for what, texts in texts_of(bodies).items():
            chars = sum(map(len, texts))
            real = sum(len(encoding.encode(text)) for text in texts)
            counted = json_tokens(json.loads(texts[0])) if what == "schema" else sum(map(count_tokens, texts))
            print(
                f"| {name} | {what} | {chars:,} | {real:,} | {chars / real:.2f} | {counted:,} |"
                f" {counted / real:.2f} |"
            )


if __name__ == "__main__":
    main()
