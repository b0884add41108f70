"""Write sample_data/reviews.jsonl and sample_data/articles.parquet (deterministic).

python scripts/make_sample_data.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent / "sample_data"

PRODUCTS = [
    "coffee grinder",
    "hiking boots",
    "desk lamp",
    "phone case",
    "blender",
    "backpack",
    "headphones",
    "office chair",
    "water bottle",
    "keyboard",
    "tent",
    "toaster",
]
POSITIVE = [
    "I love it, works great.",
    "Excellent build quality and fast shipping.",
    "Best purchase this year, would recommend.",
    "Comfortable and perfect for daily use.",
    "Amazing value, happy with it.",
]
NEGATIVE = [
    "It broke after two weeks.",
    "Terrible quality, I want a refund.",
    "Disappointed, the worst one I have owned.",
    "Useless and slow, a waste of money.",
    "Poor design and rude support.",
]
NEUTRAL = [
    "It arrived on Tuesday.",
    "Does what the box says.",
    "The colour is grey.",
    "Average, nothing special either way.",
    "I bought it for my brother.",
]
TOPICS = [
    "city council",
    "river cleanup",
    "school library",
    "solar farm",
    "night market",
    "bus network",
    "football club",
    "museum",
    "harbour",
    "bakery",
]


def reviews(n: int = 300) -> None:
    rng = random.Random(7)
    with (ROOT / "reviews.jsonl").open("w", encoding="utf-8") as f:
        for i in range(1, n + 1):
            mood = rng.choice([POSITIVE, NEGATIVE, NEUTRAL])
            text = f"The {rng.choice(PRODUCTS)}: {rng.choice(mood)} {rng.choice(NEUTRAL)}"
            stars = {id(POSITIVE): rng.randint(4, 5), id(NEGATIVE): rng.randint(1, 2)}.get(id(mood), 3)
            f.write(json.dumps({"id": f"review-{i:04d}", "text": text, "stars": stars}) + "\n")


def articles(n: int = 120) -> None:
    rng = random.Random(11)
    rows = []
    for i in range(1, n + 1):
        topic = rng.choice(TOPICS)
        sentences = [f"The {topic} announced a new plan on {rng.choice(['Monday', 'Friday', 'Sunday'])}."]
        for _ in range(rng.randint(4, 9)):
            sentences.append(
                f"Residents said the {topic} had {rng.choice(['grown', 'changed', 'improved'])} "
                f"over {rng.randint(2, 20)} years, and {rng.randint(10, 900)} people took part."
            )
        rows.append(
            {
                "id": f"article-{i:03d}",
                "title": f"News about the {topic} #{i}",
                "body": " ".join(sentences),
                "published": f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
            }
        )
    pq.write_table(pa.Table.from_pylist(rows), ROOT / "articles.parquet", row_group_size=50)


if __name__ == "__main__":
    ROOT.mkdir(exist_ok=True)
    reviews()
    articles()
