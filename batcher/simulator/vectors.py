"""The simulated embeddings' vectors: unit vectors (float32) that depend only on the input and the dimensions.

Fast in pure Python because nothing is drawn per input: once per dimension count, a seeded pool of
random unit vectors and of sign masks is made (~0.1 s at 1536 dimensions), and an input's vector is
a pool vector rotated by some elements with some signs flipped, the three picked by a hash of the
input. Rotating and flipping signs keep the norm, so every vector is a unit vector with no
arithmetic; two inputs share a vector only if their hashes pick the same of about
256 x dimensions x 32,000 combinations.
"""

from __future__ import annotations

import functools
import hashlib
import math
import random
import sys
from array import array
from collections.abc import Sequence

#: Base vectors, and sign masks (an input's mask is two of them XORed), per dimension count.
_POOL = 256
_MASKS = 256
#: Keeps the high bit of a byte: the sign bit of a little-endian float32 is its last byte's.
_SIGN_BITS = bytes(b & 0x80 for b in range(256))


def vector_for(item: str | Sequence[int], dimensions: int) -> bytes:
    """The vector of one input (a text, or a list of token ids): `dimensions` little-endian float32.

    `floats(vector_for(text, 256))` is what the simulator answers as floats, and
    `base64.b64encode(vector_for(text, 256))` what it answers as base64.
    """
    if isinstance(item, str):  # a lone surrogate is valid JSON, so it must not break the encoding
        key = b"t" + item.encode("utf-8", "surrogatepass")
    else:
        key = b"i" + ",".join(map(str, item)).encode()
    digest = int.from_bytes(hashlib.blake2b(key, digest_size=16).digest(), "little")
    vectors, masks = _pool(dimensions)
    base = vectors[digest & 0xFF]
    shift = 4 * ((digest >> 8) % dimensions)
    rotated = int.from_bytes(base[shift:] + base[:shift], "little")
    mask = masks[(digest >> 72) & 0xFF] ^ masks[(digest >> 80) & 0xFF]
    return (rotated ^ mask).to_bytes(4 * dimensions, "little")


def floats(vector: bytes) -> list[float]:
    """A vector's float32 values as Python floats (what the simulator answers for "float")."""
    values = array("f", vector)
    if sys.byteorder == "big":
        values.byteswap()
    return values.tolist()


@functools.cache
def _pool(dimensions: int) -> tuple[list[bytes], list[int]]:
    """The base vectors (float32 bytes, norm 1) and sign masks of one dimension count, seeded by it."""
    rng = random.Random(f"embeddings:{dimensions}")
    vectors = []
    for _ in range(_POOL):
        values = [rng.gauss(0.0, 1.0) for _ in range(dimensions)]
        scale = 1.0 / math.sqrt(math.fsum(v * v for v in values))
        vectors.append(array("f", [v * scale for v in values]).tobytes())
    masks = []
    for _ in range(_MASKS):
        mask = bytearray(4 * dimensions)
        mask[3::4] = rng.randbytes(dimensions).translate(_SIGN_BITS)
        masks.append(int.from_bytes(mask, "little"))
    return vectors, masks
