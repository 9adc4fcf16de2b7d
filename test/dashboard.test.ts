// contrib/grafana-dashboard.json imports and shows data: valid JSON in Grafana's shape,
// and every query names only metrics that the running server's admin /metrics exposes
// (histogram _bucket/_sum/_count series included). The server runs in-process on 127.0.0.1.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { buildConfig } from '../server/config/config.js';
import { startServer, type RunningServer } from '../server/http/server.js';
import { createLogger } from '../server/observe/log.js';
import { makeTempRoot, removeTempRoot, request } from './helpers.js';

interface Target {
  refId: string;
  expr: string;
}
interface Panel {
  id: number;
  title: string;
  type: string;
  gridPos: { x: number; y: number; w: number; h: number };
  targets: Target[];
}
interface Dashboard {
  title: string;
  uid: string;
  panels: Panel[];
  templating: { list: Array<{ name: string; query: unknown }> };
}

const METRIC_NAME = /\bimageproxy_[a-zA-Z0-9_]+/g;

/** Series names a scrape can hold: every `# TYPE` name, plus the histogram suffixes. */
function exposedNames(scrape: string): Set<string> {
  const names = new Set<string>();
  for (const match of scrape.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    const [, name = '', type] = match;
    names.add(name);
    if (type === 'histogram' || type === 'summary') for (const suffix of ['_bucket', '_sum', '_count']) names.add(name + suffix);
  }
  return names;
}

describe('contrib/grafana-dashboard.json', () => {
  let workDir: string;
  let app: RunningServer;
  let dashboard: Dashboard;
  let exposed: Set<string>;

  before(async () => {
    dashboard = JSON.parse(await readFile(new URL('../contrib/grafana-dashboard.json', import.meta.url), 'utf8')) as Dashboard;
    workDir = await makeTempRoot('imageproxy-dashboard-');
    const config = buildConfig({
      flags: { listen: '127.0.0.1:0', admin: { listen: '127.0.0.1:0' }, root: join(workDir, 'tree'), secrets: ['s'], logLevel: 'silent' },
    });
    app = await startServer({ config, secrets: config.secrets, logger: createLogger('silent') });
    assert.ok(app.adminUrl);
    const scrape = await request(app.adminUrl, '/metrics');
    assert.equal(scrape.status, 200);
    exposed = exposedNames(scrape.body.toString('utf8'));
  });
  after(async () => {
    await app.close();
    await removeTempRoot(workDir);
  });

  it("has Grafana's shape: title, uid, panels with unique ids, positions and queries", () => {
    assert.equal(typeof dashboard.title, 'string');
    assert.equal(typeof dashboard.uid, 'string');
    assert.ok(dashboard.panels.length >= 8);
    assert.equal(new Set(dashboard.panels.map((panel) => panel.id)).size, dashboard.panels.length);
    for (const panel of dashboard.panels) {
      assert.ok(panel.targets.length > 0, panel.title);
      assert.ok(panel.gridPos.w > 0 && panel.gridPos.h > 0, panel.title);
      assert.equal(new Set(panel.targets.map((target) => target.refId)).size, panel.targets.length, panel.title);
    }
    assert.ok(dashboard.templating.list.some((variable) => variable.name === 'datasource'));
  });

  it('every query names only metrics the admin listener exposes', () => {
    const queries = [
      ...dashboard.panels.flatMap((panel) => panel.targets.map((target) => ({ where: `${panel.title} ${target.refId}`, expr: target.expr }))),
      ...dashboard.templating.list.map((variable) => ({ where: `variable ${variable.name}`, expr: JSON.stringify(variable.query) })),
    ];
    for (const { where, expr } of queries) {
      const names = expr.match(METRIC_NAME) ?? [];
      if (where.startsWith('variable ')) {
        if (names.length === 0) continue;
      } else {
        assert.ok(names.length > 0, `${where}: names no imageproxy metric: ${expr}`);
      }
      for (const name of names) assert.ok(exposed.has(name), `${where}: ${name} is not exposed`);
    }
  });

  it('covers what operators watch: outcomes, request, fetch and resize latency (by format), answers and bytes by served format, queue depth and wait, backoff, RSS, event-loop lag, build info', () => {
    const all = dashboard.panels.flatMap((panel) => panel.targets.map((target) => target.expr)).join('\n');
    for (const wanted of [
      /sum by \(outcome\) \(rate\(imageproxy_responses_total/,
      /histogram_quantile\(0\.95, .*imageproxy_origin_fetch_seconds_bucket/,
      /histogram_quantile\(0\.95, sum by \(format, le\) \(rate\(imageproxy_resize_seconds_bucket/,
      /sum by \(format\) \(rate\(imageproxy_served_responses_total/,
      /sum by \(format\) \(rate\(imageproxy_served_bytes_total/,
      /imageproxy_queue_depth/,
      /outcome="backoff"/,
      /imageproxy_process_resident_memory_bytes/,
      /imageproxy_nodejs_eventloop_lag_p99_seconds/,
      /histogram_quantile\(0\.5, sum by \(outcome, le\) \(rate\(imageproxy_request_duration_seconds_bucket/,
      /histogram_quantile\(0\.95, sum by \(outcome, le\) \(rate\(imageproxy_request_duration_seconds_bucket/,
      /histogram_quantile\(0\.99, sum by \(outcome, le\) \(rate\(imageproxy_request_duration_seconds_bucket/,
      /histogram_quantile\(0\.95, sum by \(queue, le\) \(rate\(imageproxy_queue_wait_seconds_bucket/,
      /imageproxy_queue_refusals_total/,
    ]) {
      assert.match(all, wanted);
    }
    const buildInfo = dashboard.panels.find((panel) => panel.targets.some((target) => /imageproxy_build_info/.test(target.expr)));
    assert.equal(buildInfo?.type, 'table', 'build info as a table');
  });
});
