// format-impact: formats its inputs into a message fact. Imports only `log`.
import { log } from 'runbook:host/log@0.2.0';

// Export shape: the world exports a bare function `run`, so the module
// exports a function named `run` (kebab-case names become camelCase).
// ctx: { runId, stepId, nowMs: bigint, incidentStartMs: bigint | undefined, incident }
// inputs: [{ key, value }, ...]
// Returns the `outcome` record; throwing gives `result::err` (see below).
export function run(ctx, inputs) {
  const args = Object.fromEntries(inputs.map(({ key, value }) => [key, value]));
  for (const required of ['service', 'headline']) {
    if (!args[required]) {
      // An `error` variant value: { tag: '<case>', val: <payload> }.
      throw { tag: 'invalid', val: `missing input \`${required}\`` };
    }
  }
  const severity = args.severity ?? 'MED';
  const since =
    ctx.incidentStartMs === undefined
      ? 'start unknown'
      : `${Number((ctx.nowMs - ctx.incidentStartMs) / 60000n)} min since start`;
  const message = `[${severity}] ${args.service}: ${args.headline} (${since}, incident ${ctx.incident})`;
  log('info', 'formatted impact', [{ key: 'length', value: String(message.length) }]);
  return {
    label: 'formatted',
    facts: [
      { key: 'message', value: message },
      { key: 'severity', value: severity },
    ],
    summary: message,
  };
}
