// A fake host for `{{name}}`'s native tests (`node --test` in this
// directory, see step.test.mjs): Node resolves the `runbook:host/...`
// imports of step.js to the modules below, which answer from memory.
import { register } from 'node:module';

const modules = {
  'runbook:host/metrics@{{wit_version}}': `
    export function query(q) {
      const host = globalThis.fakeHost;
      host.calls.push('metrics.query ' + q.namespace + '/' + q.name);
      if (q.periodSeconds === 0 || q.windowSeconds < q.periodSeconds) {
        const e = new Error('invalid'); e.payload = { tag: 'invalid', val: 'the window must be at least one period' }; throw e;
      }
      const values = host.series[q.namespace + '/' + q.name] ?? [];
      const n = Math.floor(q.windowSeconds / q.periodSeconds);
      const period = BigInt(q.periodSeconds * 1000);
      const end = host.nowMs - (host.nowMs % period);
      const points = values.slice(-n);
      return points.map((value, i) => ({ timestampMs: end - BigInt(points.length - i) * period, value }));
    }`,
  'runbook:host/log@{{wit_version}}': `
    export function log(level, message, fields) { globalThis.fakeHost.logs.push([level, message]); }`,
  'runbook:host/history@{{wit_version}}': `
    export function steps() { return globalThis.fakeHost.history ?? []; }`,
};

const hooks = `
  const modules = ${JSON.stringify(modules)};
  export async function resolve(specifier, context, next) {
    if (specifier in modules) return { url: 'fake-host:' + specifier, shortCircuit: true };
    return next(specifier, context);
  }
  export async function load(url, context, next) {
    if (url.startsWith('fake-host:')) {
      return { format: 'module', source: modules[url.slice('fake-host:'.length)], shortCircuit: true };
    }
    return next(url, context);
  }`;
register('data:text/javascript,' + encodeURIComponent(hooks));

/** A fresh fake host: metrics from `series` (`namespace/name` -> values). */
export function fakeHost(series = {}) {
  globalThis.fakeHost = { series, calls: [], logs: [], nowMs: 1764126240000n };
  return globalThis.fakeHost;
}
