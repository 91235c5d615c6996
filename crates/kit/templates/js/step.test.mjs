// Native unit tests for `{{name}}`: `node --import ./fake-host.mjs --test`
// in this directory. No component: step.js runs in Node, its capability
// imports answered by the fake host.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fakeHost } from './fake-host.mjs';

const { run } = await import('./step.js');
const ctx = { runId: 'test-run', stepId: 'test-step', nowMs: 1764126240000n, incidentStartMs: undefined, incident: 'test' };
const inputs = (o) => Object.entries(o).map(([key, value]) => ({ key, value: String(value) }));
const INPUTS = { namespace: 'Example', metric: 'errors', budget: 100 };

test('over budget is burning', () => {
  const host = fakeHost({ 'Example/errors': [20, 250] });
  assert.equal(run(ctx, inputs(INPUTS)).label, 'burning');
  assert.deepEqual(host.calls, ['metrics.query Example/errors']);
});

test('under budget, and no data', () => {
  fakeHost({ 'Example/errors': [12] });
  assert.equal(run(ctx, inputs(INPUTS)).label, 'within-budget');
  fakeHost();
  assert.equal(run(ctx, inputs(INPUTS)).label, 'no-data');
});

test('a bad budget is invalid', () => {
  fakeHost();
  assert.throws(() => run(ctx, inputs({ ...INPUTS, budget: 'lots' })), (e) => e.tag === 'invalid');
});
