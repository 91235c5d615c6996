"""Native unit tests for `{{name}}`, in CPython, no component:
`python3 -m unittest` in this directory, after `runbook build` (which also
writes the bindings to `.bindings/`). The bindings' capability functions
raise NotImplementedError outside a component; `FakeHost` answers them
from memory, as the host would."""
import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, ".bindings"), HERE]

from componentize_py_types import Err  # noqa: E402
from wit_world.imports import log, metrics, types  # noqa: E402

import app  # noqa: E402


class FakeHost:
    """Metrics from `series` (`namespace/name` -> values, oldest first);
    records every call and log line."""

    def __init__(self, series=None, now_ms=1_764_126_240_000):
        self.series = series or {}
        self.now_ms = now_ms
        self.calls = []
        self.logs = []
        metrics.query = self._query
        log.log = lambda level, message, fields: self.logs.append((level, message))

    def _query(self, q):
        self.calls.append(f"metrics.query {q.namespace}/{q.name}")
        if q.period_seconds == 0 or q.window_seconds < q.period_seconds:
            raise Err(types.Error_Invalid("the window must be at least one period"))
        values = self.series.get(f"{q.namespace}/{q.name}", [])
        points = values[-(q.window_seconds // q.period_seconds):]
        period = q.period_seconds * 1000
        end = self.now_ms - self.now_ms % period
        return [
            metrics.Datapoint(timestamp_ms=end - (len(points) - i) * period, value=v)
            for i, v in enumerate(points)
        ]

    def run(self, **inputs):
        ctx = types.RunContext(run_id="test-run", step_id="test-step", now_ms=self.now_ms,
                               incident_start_ms=None, incident="test-incident")
        pairs = [types.Pair(key=k, value=str(v)) for k, v in inputs.items()]
        return app.WitWorld().run(ctx, pairs)


INPUTS = {"namespace": "Example", "metric": "errors", "budget": "100"}


class Tests(unittest.TestCase):
    def test_over_budget_is_burning(self):
        host = FakeHost({"Example/errors": [20.0, 250.0]})
        out = host.run(**INPUTS)
        self.assertEqual(out.label, "burning")
        self.assertEqual(host.calls, ["metrics.query Example/errors"])

    def test_under_budget_and_no_data(self):
        self.assertEqual(FakeHost({"Example/errors": [12.0]}).run(**INPUTS).label, "within-budget")
        self.assertEqual(FakeHost().run(**INPUTS).label, "no-data")

    def test_a_bad_budget_is_invalid(self):
        with self.assertRaises(Err) as e:
            FakeHost().run(namespace="Example", metric="errors", budget="lots")
        self.assertIsInstance(e.exception.value, types.Error_Invalid)


if __name__ == "__main__":
    unittest.main()
