"""`{{name}}`: is an error budget burning? Reads the latest value of one
metric (errors per minute) and compares it with the budget.
Outcomes: `within-budget`, `burning`, `no-data`.

`runbook build` generates the bindings' world from plugin.toml's grants
(only what is granted is imported) and builds this with componentize-py.
"""
from typing import List

import wit_world
from wit_world.imports import log, metrics
from wit_world.imports.types import Error_Invalid, Outcome, Pair, RunContext
from componentize_py_types import Err


def _number(args: dict, key: str) -> float:
    if key not in args:
        raise Err(Error_Invalid(f"missing input `{key}`"))
    try:
        return float(args[key])
    except ValueError:
        raise Err(Error_Invalid(f"input `{key}` is not a number: `{args[key]}`"))


def _dimensions(raw: str) -> List[metrics.Dimension]:
    dims = []
    for part in filter(None, (p.strip() for p in raw.split(","))):
        name, sep, value = part.partition("=")
        if not sep:
            raise Err(Error_Invalid(f"dimension `{part}` is not `Name=Value`"))
        dims.append(metrics.Dimension(name=name.strip(), value=value.strip()))
    return dims


# componentize-py wants the world's exports on a class named `WitWorld`.
class WitWorld(wit_world.WitWorld):
    def run(self, ctx: RunContext, inputs: List[Pair]) -> Outcome:
        args = {p.key: p.value for p in inputs}
        budget = _number(args, "budget")
        for key in ("namespace", "metric"):
            if key not in args:
                raise Err(Error_Invalid(f"missing input `{key}`"))
        query = metrics.MetricQuery(
            namespace=args["namespace"],
            name=args["metric"],
            dimensions=_dimensions(args.get("dimensions", "")),
            statistic="sum",
            period_seconds=60,
            window_seconds=300,
        )
        # A host error raises Err: the step ends `error` with it.
        points = metrics.query(query)
        if not points:
            return Outcome(label="no-data", facts=[], summary=f"{query.name}: no data in 5 minutes")
        spent = points[-1].value
        label = "burning" if spent > budget else "within-budget"
        log.log(log.Level.INFO, "error budget checked", [Pair(key="spent", value=f"{spent:g}")])
        return Outcome(
            label=label,
            facts=[Pair(key="spent", value=f"{spent:g}"), Pair(key="budget", value=f"{budget:g}")],
            summary=f"{query.name} is {spent:g} a minute; the budget is {budget:g}",
        )
