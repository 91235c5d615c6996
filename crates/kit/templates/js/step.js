// `{{name}}`: is an error budget burning? Reads the latest value of one
// metric (errors per minute) and compares it with the budget.
// Outcomes: `within-budget`, `burning`, `no-data`.
//
// `runbook build` generates the world from plugin.toml's grants (only
// what is granted is imported) and builds this with componentize-js,
// without `wasi:http` (steps have no network of their own).
import { query } from 'runbook:host/metrics@{{wit_version}}';
import { log } from 'runbook:host/log@{{wit_version}}';

// A step error is `{ tag, val }` (`invalid`, `denied`, `unavailable`,
// `timeout`, `not-found`); anything else thrown would trap.
const invalid = (val) => ({ tag: 'invalid', val });

// A capability that fails throws an error carrying the host's `{ tag, val }`;
// handing that on makes it the step's error.
function host(call) {
  try {
    return call();
  } catch (e) {
    throw e && e.payload && e.payload.tag ? e.payload : e;
  }
}

function number(args, key) {
  if (!(key in args)) throw invalid(`missing input \`${key}\``);
  const n = Number(args[key]);
  if (!Number.isFinite(n)) throw invalid(`input \`${key}\` is not a number: \`${args[key]}\``);
  return n;
}

function dimensions(raw = '') {
  return raw
    .split(',')
    .map((p) => p.trim())
    .filter(Boolean)
    .map((part) => {
      const at = part.indexOf('=');
      if (at < 0) throw invalid(`dimension \`${part}\` is not \`Name=Value\``);
      return { name: part.slice(0, at).trim(), value: part.slice(at + 1).trim() };
    });
}

// The world exports `run`: (run-context, list<pair>) -> result<outcome, error>.
export function run(ctx, inputs) {
  const args = Object.fromEntries(inputs.map(({ key, value }) => [key, value]));
  const budget = number(args, 'budget');
  for (const key of ['namespace', 'metric']) {
    if (!(key in args)) throw invalid(`missing input \`${key}\``);
  }
  const q = {
    namespace: args.namespace,
    name: args.metric,
    dimensions: dimensions(args.dimensions),
    statistic: 'sum',
    periodSeconds: 60,
    windowSeconds: 300,
  };
  // A host error is thrown as `{ tag, val }`: the step ends `error` with it.
  const points = host(() => query(q));
  if (points.length === 0) {
    return { label: 'no-data', facts: [], summary: `${q.name}: no data in 5 minutes` };
  }
  const spent = points[points.length - 1].value;
  const label = spent > budget ? 'burning' : 'within-budget';
  log('info', 'error budget checked', [{ key: 'spent', value: String(spent) }]);
  return {
    label,
    facts: [
      { key: 'spent', value: String(spent) },
      { key: 'budget', value: String(budget) },
    ],
    summary: `${q.name} is ${spent} a minute; the budget is ${budget}`,
  };
}
