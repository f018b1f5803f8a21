"""Seeded distributions parsed from their command-line specs: token lengths, model names and service tiers."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

__all__ = ["SERVICE_TIERS", "LengthDist", "ModelMix", "ServiceTierMix"]

# The values of OpenAI's `service_tier` request field.
SERVICE_TIERS = ("auto", "default", "flex", "priority")


def _number(text: str, spec: str, *, integer: bool) -> float:
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise ValueError(f"spec {spec!r}: {text!r} is not {kind}") from None
    if not math.isfinite(value):
        raise ValueError(f"spec {spec!r}: {text!r} is not finite")
    return value


@dataclass(frozen=True)
class LengthDist:
    """A distribution of token counts, parsed from a short spec string.

    Specs: `"64"` or `"fixed:64"`; `"uniform:32:128"` (bounds inclusive); `"normal:MEAN:STD"`
    (rounded, clipped to at least 1); `"hist:32=0.5,64=0.3,128=0.2"` (values and weights, which are
    normalised).

    Attributes:
        kind: `fixed`, `uniform`, `normal` or `hist`.
        params: The value (fixed), bounds (uniform), mean and std (normal), or the values (hist).
        weights: The probabilities of the hist values; empty for other kinds.
    """

    kind: Literal["fixed", "uniform", "normal", "hist"]
    params: tuple[float, ...]
    weights: tuple[float, ...] = field(default=())

    @classmethod
    def parse(cls, spec: str) -> LengthDist:
        """Parse a spec string.

        Raises:
            ValueError: If the spec is malformed or a length is below 1.
        """
        kind, _, rest = spec.strip().partition(":")
        if not rest:
            kind, rest = "fixed", kind
        parts = rest.split(":")
        if kind == "fixed" and len(parts) == 1:
            value = _number(parts[0], spec, integer=True)
            if value < 1:
                raise ValueError(f"length spec {spec!r}: length must be >= 1")
            return cls("fixed", (value,))
        if kind == "uniform" and len(parts) == 2:
            low, high = (_number(part, spec, integer=True) for part in parts)
            if not 1 <= low <= high:
                raise ValueError(f"length spec {spec!r}: need 1 <= low <= high")
            return cls("uniform", (low, high))
        if kind == "normal" and len(parts) == 2:
            mean, std = (_number(part, spec, integer=False) for part in parts)
            if mean < 1 or std < 0:
                raise ValueError(f"length spec {spec!r}: need mean >= 1 and std >= 0")
            return cls("normal", (mean, std))
        if kind == "hist" and len(parts) == 1:
            return cls._parse_hist(parts[0], spec)
        raise ValueError(
            f"bad length spec {spec!r}: expected N, fixed:N, uniform:LOW:HIGH, normal:MEAN:STD"
            " or hist:N=W,N=W,..."
        )

    @classmethod
    def _parse_hist(cls, body: str, spec: str) -> LengthDist:
        values, weights = [], []
        for item in body.split(","):
            value, sep, weight = item.partition("=")
            if not sep:
                raise ValueError(f"length spec {spec!r}: {item!r} is not VALUE=WEIGHT")
            values.append(_number(value, spec, integer=True))
            weights.append(_number(weight, spec, integer=False))
        if min(values) < 1 or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"length spec {spec!r}: need values >= 1 and non-negative weights with sum > 0")
        total = sum(weights)
        return cls("hist", tuple(values), tuple(w / total for w in weights))

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Draw `n` lengths, each at least 1, as an int64 array."""
        if self.kind == "fixed":
            return np.full(n, int(self.params[0]), dtype=np.int64)
        if self.kind == "uniform":
            low, high = (int(p) for p in self.params)
            return rng.integers(low, high, size=n, endpoint=True, dtype=np.int64)
        if self.kind == "normal":
            mean, std = self.params
            return np.maximum(np.rint(rng.normal(mean, std, size=n)), 1).astype(np.int64)
        values = np.asarray(self.params, dtype=np.int64)
        return values[rng.choice(len(values), size=n, p=np.asarray(self.weights))]


@dataclass(frozen=True)
class ModelMix:
    """Which model each request names, parsed from a spec string.

    Specs: `"base"`; `"base=3,alpha=1,beta=1"` (weights, default 1, normalised);
    `"zipf:1.1:base,alpha,beta"` (weight of the name at rank r proportional to 1/r**s).

    Attributes:
        names: The model names, in rank order for Zipf.
        weights: Their probabilities, summing to 1.
    """

    names: tuple[str, ...]
    weights: tuple[float, ...]

    @classmethod
    def parse(cls, spec: str) -> ModelMix:
        """Parse a spec string.

        Raises:
            ValueError: If the spec is malformed, names repeat or weights are not positive.
        """
        spec = spec.strip()
        if spec.startswith("zipf:"):
            exponent, sep, listed = spec.removeprefix("zipf:").partition(":")
            if not sep:
                raise ValueError(f"model mix {spec!r}: expected zipf:S:NAME,NAME,...")
            s = _number(exponent, spec, integer=False)
            if s < 0:
                raise ValueError(f"model mix {spec!r}: exponent must be >= 0")
            names = [name.strip() for name in listed.split(",")]
            raw = [1 / rank**s for rank in range(1, len(names) + 1)]
        else:
            names, raw = _weighted(spec)
        if not all(names):
            raise ValueError(f"model mix {spec!r}: empty model name")
        if len(set(names)) != len(names):
            raise ValueError(f"model mix {spec!r}: repeated model name")
        if not all(w > 0 for w in raw):
            raise ValueError(f"model mix {spec!r}: weights must be positive")
        total = sum(raw)
        return cls(tuple(names), tuple(w / total for w in raw))

    def sample(self, rng: np.random.Generator, n: int) -> list[str]:
        """Draw the model names of `n` requests."""
        return _draw(self.names, self.weights, rng, n)


@dataclass(frozen=True)
class ServiceTierMix:
    """Which OpenAI `service_tier` each request asks for, parsed from a spec string.

    Specs: `"flex"` (every request), or `"flex=1,default=3"` (weights, default 1, normalised), with tiers
    from `SERVICE_TIERS`. Drawn like a `ModelMix`, from its own seeded stream.

    Attributes:
        tiers: The tier names.
        weights: Their probabilities, summing to 1.
    """

    tiers: tuple[str, ...]
    weights: tuple[float, ...]

    @classmethod
    def parse(cls, spec: str) -> ServiceTierMix:
        """Parse a spec string.

        Raises:
            ValueError: If the spec is malformed, a tier is unknown or repeats, or a weight is not positive.
        """
        tiers, raw = _weighted(spec.strip())
        unknown = [tier for tier in tiers if tier not in SERVICE_TIERS]
        if unknown:
            raise ValueError(
                f"service tier mix {spec!r}: unknown tier {unknown[0]!r}, expected {SERVICE_TIERS}"
            )
        if len(set(tiers)) != len(tiers):
            raise ValueError(f"service tier mix {spec!r}: repeated tier")
        if not all(w > 0 for w in raw):
            raise ValueError(f"service tier mix {spec!r}: weights must be positive")
        total = sum(raw)
        return cls(tuple(tiers), tuple(w / total for w in raw))

    def sample(self, rng: np.random.Generator, n: int) -> list[str]:
        """Draw the tiers of `n` requests."""
        return _draw(self.tiers, self.weights, rng, n)


def _weighted(spec: str) -> tuple[list[str], list[float]]:
    """`"a=3,b,c=0.5"` -> the names and their raw weights (1 where none is given)."""
    names, raw = [], []
    for item in spec.split(","):
        name, _, weight = item.rpartition("=") if "=" in item else (item, "", "1")
        raw.append(_number(weight, spec, integer=False))
        names.append(name.strip())
    return names, raw


def _draw(names: tuple[str, ...], weights: tuple[float, ...], rng: np.random.Generator, n: int) -> list[str]:
    # One name consumes no randomness, so a single-name mix leaves the stream as it found it.
    if len(names) == 1:
        return [names[0]] * n
    picks = rng.choice(len(names), size=n, p=np.asarray(weights))
    return [names[i] for i in picks]
