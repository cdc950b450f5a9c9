"""Black-Scholes pricing for the simulated market's options (European, no dividends)."""

from __future__ import annotations

import math

import attrs

__all__ = ["RATE", "Valuation", "black_scholes"]

RATE = 0.04
"""The risk-free rate the simulated market prices options with."""


def _norm_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def _norm_pdf(x: float) -> float:
    return math.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


@attrs.frozen
class Valuation:
    price: float
    delta: float
    gamma: float
    theta: float  # per calendar day
    vega: float  # per volatility point
    rho: float  # per rate point


def black_scholes(spot: float, strike: float, years: float, vol: float, is_call: bool) -> Valuation:
    years = max(years, 1.0 / (365 * 24))
    root_t = math.sqrt(years)
    d1 = (math.log(spot / strike) + (RATE + vol * vol / 2) * years) / (vol * root_t)
    d2 = d1 - vol * root_t
    discount = math.exp(-RATE * years)
    pdf = _norm_pdf(d1)
    decay = -spot * pdf * vol / (2 * root_t)
    if is_call:
        price = spot * _norm_cdf(d1) - strike * discount * _norm_cdf(d2)
        delta = _norm_cdf(d1)
        theta = decay - RATE * strike * discount * _norm_cdf(d2)
        rho = strike * years * discount * _norm_cdf(d2)
    else:
        price = strike * discount * _norm_cdf(-d2) - spot * _norm_cdf(-d1)
        delta = _norm_cdf(d1) - 1.0
        theta = decay + RATE * strike * discount * _norm_cdf(-d2)
        rho = -strike * years * discount * _norm_cdf(-d2)
    return Valuation(
        price=max(price, 0.0),
        delta=min(max(delta, -1.0), 1.0),
        gamma=pdf / (spot * vol * root_t),
        theta=theta / 365,
        vega=spot * pdf * root_t / 100,
        rho=rho / 100,
    )
