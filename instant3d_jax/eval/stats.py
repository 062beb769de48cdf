"""Confidence intervals of the proportions the evaluations report (issue "Stage-1 scores that
can fail": every score with its n and a 95% interval).

`wilson(k, n)`: the Wilson score interval of a binomial proportion k/n (Wilson 1927; the
interval recommended over the normal one for small n and proportions near 0 or 1, Brown, Cai &
DasGupta 2001). `proportion(k, n)` bundles it with the estimate. The grids of one caption are not
independent draws of the model's skill on captions, so an interval over grids is narrower than one
over captions would be; reports say which count n is.
"""
from __future__ import annotations

import math

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
  """The Wilson score interval (lo, hi) of k successes in n trials; (nan, nan) when n = 0."""
  k, n = int(k), int(n)
  if n <= 0:
    return float("nan"), float("nan")
  if not 0 <= k <= n:
    raise ValueError(f"wilson: expected 0 <= k <= n, found k={k}, n={n}")
  p = k / n
  den = 1.0 + z * z / n
  centre = (p + z * z / (2 * n)) / den
  half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
  return (0.0 if k == 0 else max(0.0, centre - half)), (1.0 if k == n else min(1.0, centre + half))


def proportion(k: int, n: int, z: float = Z95) -> dict:
  """{"p", "k", "n", "lo", "hi"}: k/n (NaN when n = 0) with its Wilson interval."""
  lo, hi = wilson(k, n, z)
  return {"p": (int(k) / int(n)) if n else float("nan"), "k": int(k), "n": int(n),
          "lo": lo, "hi": hi}


def format_proportion(x: dict | None) -> str:
  """'62.5% [40.6, 80.0] (n=24)'; 'n/a' for no trial; an exact value (no "n") as '10.0%'."""
  if not x or x.get("n", 1) == 0 or x.get("p") != x.get("p"):
    return "n/a"
  if "n" not in x:
    return f"{100 * x['p']:.1f}%"
  return f"{100 * x['p']:.1f}% [{100 * x['lo']:.1f}, {100 * x['hi']:.1f}] (n={x['n']})"
