"""What a run's requests are expected to use, and at most: the dry run's tokens and cost.

Prompts count at the estimator's characters a token (kinds/tokens.py: measured with OpenAI's
tokenizers); completions are expected at `tokens.expected_completion` of each request's
max_tokens, and at most at max_tokens. In a run directory holding at least CALIBRATE_AFTER
answers of earlier sessions (a `--limit 20` run, say), both come from those answers instead: their
characters a token and their mean completion. Identical requests count once, as the run sends them
(`--dedupe`, within the last `reuse.RECENT` answers). See docs/estimates.md.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from batcher.kinds.reuse import RECENT, request_key
from batcher.kinds.tokens import (
    CHARS_PER_TOKEN,
    DEFAULT_COMPLETION_TOKENS,
    EXPECTED_SHARE,
    SHORT_CAP,
    TokenEstimator,
    choices_asked,
    expected_completion,
)
from batcher.limits.costs import Prices

#: Answers of earlier sessions that are enough to estimate the rest from.
CALIBRATE_AFTER = 10


@dataclass
class _Model:
    """The requests to send of one model: what their figures are made of."""

    requests: int = 0
    prompt_chars: int = 0
    expected: int = 0
    at_most: int = 0


@dataclass
class Estimate:
    """Tokens and USD of the requests to send: expected, and at most (completions at max_tokens)."""

    requests: int = 0
    #: Rows that repeat a request of the same session: answered once (--dedupe).
    repeats: int = 0
    prompt_tokens: int = 0
    completion_expected: int = 0
    completion_at_most: int = 0
    #: Requests that set no max_tokens, counted at DEFAULT_COMPLETION_TOKENS at most.
    guessed: int = 0
    cost_expected: float = 0.0
    cost_at_most: float = 0.0
    batch_cost_expected: float = 0.0
    batch_cost_at_most: float = 0.0
    #: Requests of a model with no price (their cost is not in the figures).
    unpriced: int = 0
    #: How the figures were made, in words.
    method: str = ""
    #: Models with no price, as seen.
    unpriced_models: list[str] = field(default_factory=list)


class Tally:
    """Adds up the requests of a dry run, row by row, then makes the `Estimate`."""

    def __init__(self, estimator: TokenEstimator, *, dedupe: bool, embeddings: bool, labels: tuple = ()):
        self.estimator, self.embeddings = estimator, embeddings
        #: The characters of a classification answer, `{"label":"..."}` with the longest label.
        self.answer_chars = len('{"label":""}') + max(map(len, labels)) if labels else None
        self.models: dict[Any, _Model] = {}
        self.repeats = self.guessed = 0
        #: Requests of earlier sessions (rows done), and their prompts' characters.
        self.done_requests = self.done_chars = 0
        self._windows = (OrderedDict(), OrderedDict()) if dedupe else None

    def add(self, body: dict[str, Any], *, done: bool = False) -> int:
        """Count a row's request (`done`: one of an earlier session's); its prompt tokens, or 0 when
        the row repeats a request and shares its answer."""
        if self._windows is not None and self._repeats(body, self._windows[done]):
            self.repeats += not done
            return 0
        chars = self.estimator.prompt_chars(body)
        if done:
            self.done_requests += 1
            self.done_chars += chars
            return 0
        model = self.models.setdefault(body.get("model"), _Model())
        model.requests += 1
        model.prompt_chars += chars
        if not self.embeddings:
            cap = body.get("max_completion_tokens") or body.get("max_tokens")
            if not cap:
                cap = DEFAULT_COMPLETION_TOKENS
                self.guessed += 1
            choices = choices_asked(body)
            model.at_most += cap * choices
            model.expected += expected_completion(cap, self.answer_chars) * choices
        return round(chars / self.estimator.chars_per_token)

    @staticmethod
    def _repeats(body: dict[str, Any], window: OrderedDict) -> bool:
        key = request_key(body)
        if key in window:
            window.move_to_end(key)
            return True
        window[key] = None
        if len(window) > RECENT:
            window.popitem(last=False)
        return False

    def estimate(self, prices: Prices, earlier: Any = None) -> Estimate:
        """The figures, at the prices given; `earlier`: the run directory's Progress, if any."""
        chars_per_token, per_answer, method = self._calibration(earlier)
        result = Estimate(repeats=self.repeats, guessed=self.guessed, method=method)
        for name, model in self.models.items():
            prompt = round(model.prompt_chars / chars_per_token)
            expected = model.expected
            if per_answer is not None:
                expected = min(model.at_most, round(per_answer * model.requests))
            result.requests += model.requests
            result.prompt_tokens += prompt
            result.completion_expected += expected
            result.completion_at_most += model.at_most
            if prices.of(name) is None:
                result.unpriced += model.requests
                result.unpriced_models.append(str(name))
                continue
            expected_usage = {"prompt_tokens": prompt, "completion_tokens": expected}
            most_usage = {"prompt_tokens": prompt, "completion_tokens": model.at_most}
            result.cost_expected += prices.cost(name, expected_usage)
            result.cost_at_most += prices.cost(name, most_usage)
            result.batch_cost_expected += prices.cost(name, expected_usage, batch=True)
            result.batch_cost_at_most += prices.cost(name, most_usage, batch=True)
        return result

    def _calibration(self, earlier: Any) -> tuple[float, float | None, str]:
        """(characters a token, completion tokens an answer or None, the method in words)."""
        answers, at_most = self.done_requests, "; at most: completions at max_tokens"
        if earlier is not None and answers >= CALIBRATE_AFTER and earlier.prompt_tokens > 0:
            chars_per_token = self.done_chars / earlier.prompt_tokens
            per_answer = None if self.embeddings else earlier.completion_tokens / answers
            completions = (
                f", completions {per_answer:.1f} tokens an answer{at_most}" if per_answer is not None else ""
            )
            said = f"from the {answers:,} answers of earlier sessions: prompts at {chars_per_token:.2f}"
            return chars_per_token, per_answer, f"{said} characters a token{completions}"
        prompts = f"prompts at {CHARS_PER_TOKEN:g} characters a token (OpenAI's tokenizers, on English)"
        if self.embeddings:
            return CHARS_PER_TOKEN, None, prompts
        if self.answer_chars is not None:
            expected = "completions expected at the longest label's length"
        else:
            share = f"{EXPECTED_SHARE:.0%} of max_tokens (all of one of {SHORT_CAP} or less)"
            expected = f"completions expected at {share}"
        return CHARS_PER_TOKEN, None, f"{prompts}; {expected}{at_most}"
