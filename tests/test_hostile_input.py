"""Hostile input, generated: every file is accepted or refused with a message naming the place."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batcher.errors import BatcherError, ConfigError, InputError
from batcher.inputs.scan import scan as scan_input
from batcher.inputs.sources import Source
from batcher.job import build_job
from batcher.job.files import load_job_file
from batcher.kinds.prompts import RequestBuilder, template_columns

SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def scan(path: Path, prompt: str | None = "Say {text}", id_column: str = "id"):
    source = Source(path, id_column=id_column, has_template=prompt is not None)
    builder = RequestBuilder(
        source.kind, template=prompt, system=None, defaults={"model": "m"}, id_column=id_column
    )
    return scan_input(source, builder, source.fingerprint()), list(source.rows(builder))


def accepted_or_refused(path: Path, **kwargs) -> None:
    try:
        result, rows = scan(path, **kwargs)
    except InputError as e:
        assert str(path) in str(e)
    except ConfigError as e:
        assert str(path) in str(e)
    else:
        assert result.total == len(rows) > 0


@SETTINGS
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_as_jsonl(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "in.jsonl"
        path.write_bytes(data)
        accepted_or_refused(path)
        accepted_or_refused(path, prompt=None)


@SETTINGS
@given(st.lists(json_values, min_size=1, max_size=8))
def test_arbitrary_json_lines(values):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "in.jsonl"
        path.write_text("".join(json.dumps(v) + "\n" for v in values))
        accepted_or_refused(path)
        accepted_or_refused(path, prompt=None)


@SETTINGS
@given(
    st.lists(
        st.fixed_dictionaries(
            {"id": st.integers() | st.text(max_size=5) | st.none()},
            optional={"text": json_scalars, "extra": json_values},
        ),
        min_size=1,
        max_size=10,
    )
)
def test_rows_with_missing_extra_and_wrongly_typed_columns(rows):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "in.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        try:
            result, sent = scan(path)
        except InputError as e:
            assert "line " in str(e) or "lines " in str(e)  # (rows failing alike: "lines 2-4: ...")
        else:
            assert [r.row_id for r in sent] == [str(r["id"]) for r in rows]


@SETTINGS
@given(st.binary(max_size=3000))
def test_arbitrary_bytes_as_parquet(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "in.parquet"
        path.write_bytes(b"PAR1" + data + b"PAR1")
        accepted_or_refused(path)


@SETTINGS
@given(st.text(max_size=60))
def test_arbitrary_templates_are_accepted_or_refused_clearly(template):
    try:
        template_columns(template)
    except ConfigError as e:
        assert "template" in str(e)


@SETTINGS
@given(st.binary(max_size=1000))
def test_arbitrary_bytes_as_a_job_file(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "job.toml"
        path.write_bytes(data)
        try:
            build_job(load_job_file(path))
        except ConfigError as e:
            # refused with a message: by its file (not TOML, a bad setting) or by what it lacks
            assert str(e).strip() and "Traceback" not in str(e)


@SETTINGS
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "input",
                "output",
                "model",
                "rpm",
                "tpm",
                "concurrency",
                "temperature",
                "top_p",
                "max_tokens",
                "keep_columns",
                "timeout",
                "base_url",
                "output_format",
                "simulator",
                "retry_failed",
                "drain_timeout",
            ]
        ),
        json_values,
        max_size=8,
    )
)
def test_job_settings_of_any_type_are_validated_not_crashed_on(settings_):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "job.toml"
        path.write_text("".join(f"{k} = {_toml(v)}\n" for k, v in settings_.items() if _toml(v) is not None))
        try:
            job = build_job(load_job_file(path))
        except BatcherError:
            pass
        else:
            assert job.concurrency >= 1


def _toml(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)) and not (isinstance(value, float) and not math.isfinite(value)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        items = [_toml(v) for v in value]
        return None if any(i is None for i in items) else "[" + ", ".join(items) + "]"
    return None


def test_a_huge_line_is_read(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps({"id": 1, "text": "x" * 10_000_000}) + "\n")

    result, rows = scan(path)

    assert result.total == 1 and len(rows[0].row["text"]) == 10_000_000


def test_deeply_nested_json_is_refused_by_line(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text(
        '{"id": 1, "text": "ok"}\n' + '{"id": 2, "text": ' + "[" * 100_000 + "]" * 100_000 + "}\n"
    )

    with pytest.raises(InputError, match="line 2 is nested too deeply"):
        scan(path)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_refused_by_line(tmp_path, constant):
    path = tmp_path / "in.jsonl"
    path.write_text(f'{{"id": 1, "text": "a", "temperature": {constant}}}\n')

    with pytest.raises(InputError, match=f"line 1 is not valid JSON \\({constant} is not valid JSON\\)"):
        scan(path)
