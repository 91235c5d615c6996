"""check-error-budget: reads one error-rate metric and compares its burn
rate against the SLO's error budget."""
from typing import List

import wit_world
from wit_world.imports import log, metrics
from wit_world.imports.types import (
    Error_Invalid,
    Error_NotFound,
    Outcome,
    Pair,
    RunContext,
)
from componentize_py_types import Err


def _dimensions(raw: str) -> List[metrics.Dimension]:
    dims = []
    for part in filter(None, (p.strip() for p in raw.split(","))):
        name, sep, value = part.partition("=")
        if not sep:
            raise Err(Error_Invalid(f"dimension `{part}` is not Name=Value"))
        dims.append(metrics.Dimension(name=name.strip(), value=value.strip()))
    return dims


def _number(inputs: dict, key: str) -> float:
    try:
        return float(inputs[key])
    except KeyError:
        raise Err(Error_Invalid(f"missing input `{key}`"))
    except ValueError:
        raise Err(Error_Invalid(f"input `{key}` is not a number: {inputs[key]!r}"))


# The class must be named `WitWorld` (the world's exports live on it).
class WitWorld(wit_world.WitWorld):
    def run(self, ctx: RunContext, inputs: List[Pair]) -> Outcome:
        args = {p.key: p.value for p in inputs}
        slo = _number(args, "slo_percent")            # e.g. 99.9
        max_burn = _number(args, "max_burn_rate")     # e.g. 1.0 or 14.4
        budget = 100.0 - slo                          # allowed error percent
        if budget <= 0:
            raise Err(Error_Invalid("slo_percent must be below 100"))
        q = metrics.MetricQuery(
            namespace=args["namespace"],
            name=args["metric"],
            dimensions=_dimensions(args.get("dimensions", "")),
            statistic=args.get("statistic", "average"),
            period_seconds=int(args.get("period_seconds", "60")),
            window_seconds=int(args.get("window_seconds", "300")),
        )
        # Raises Err(types.Error) on a host error: propagates as the step's error.
        points = metrics.query(q)
        if not points:
            raise Err(Error_NotFound(f"no datapoints for {q.namespace}/{q.name}"))
        error_rate = points[-1].value
        burn = error_rate / budget
        label = "burning" if burn > max_burn else "within-budget"
        log.log(log.Level.INFO, "error budget checked",
                [Pair("error_rate", f"{error_rate:g}"), Pair("burn_rate", f"{burn:.2f}")])
        return Outcome(
            label=label,
            facts=[
                Pair(key="error_rate_percent", value=f"{error_rate:g}"),
                Pair(key="burn_rate", value=f"{burn:.2f}"),
            ],
            summary=f"{q.name} error rate {error_rate:g}% = burn rate {burn:.2f}x "
                    f"of the {slo:g}% SLO budget (max {max_burn:g}x): {label}",
        )
