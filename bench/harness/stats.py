"""Median, "median [min–max]" and n/a-aware number formatting for the log and the report."""

import statistics


def med(xs):
    xs = [x for x in xs if x is not None and x == x]
    return statistics.median(xs) if xs else float("nan")


def spread(xs, fmt="{:.0f}"):
    xs = [x for x in xs if x is not None and x == x]
    if not xs:
        return "n/a"
    return f"{fmt.format(statistics.median(xs))} [{fmt.format(min(xs))}–{fmt.format(max(xs))}]"


def f(x, fmt="{:.2f}"):
    return "n/a" if x is None or x != x else fmt.format(x)
