/**
 * server/deploy/s3Nginx.ts through renderServerBlock: where nginx connects and which path
 * it signs for each way of reaching a bucket (tables), and the settings it refuses.
 * test/nginxS3.test.ts runs the rendered config against a real gateway.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ConfigError } from '../server/config/config.js';
import { renderServerBlock } from '../server/deploy/nginxConfig.js';
import type { NginxS3Input } from '../server/deploy/s3Nginx.js';
import { exampleRenderInput } from './nginxHarness.js';

const S3: NginxS3Input = {
  endpoint: 'http://127.0.0.1:7480',
  bucket: 'images',
  region: 'us-east-1',
  prefix: 'site-a/',
  forcePathStyle: true,
  cacheDir: '/var/cache/imageproxy',
  cacheMaxSize: '10g',
};

const render = (s3: Partial<NginxS3Input>, formats: Array<'avif' | 'webp'> = []): string =>
  renderServerBlock(exampleRenderInput({ formats, s3: { ...S3, ...s3 } }));

describe('nginx config from a bucket: what nginx asks the gateway for', () => {
  const cases: Array<{ what: string; s3: Partial<NginxS3Input>; lines: string[] }> = [
    {
      what: 'path-style with a prefix',
      s3: {},
      lines: ['set $s3_object_path "/images/site-a$imageproxy_stem";', 'set $s3_host "127.0.0.1:7480";', 'server 127.0.0.1:7480;', 'proxy_pass http://imageproxy_s3$s3_object_path;'],
    },
    { what: 'path-style without a prefix', s3: { prefix: '' }, lines: ['set $s3_object_path "/images$imageproxy_stem";', 'set $s3_object_path "/images/$imageproxy_internal_object";'] },
    {
      what: 'virtual-hosted',
      s3: { endpoint: 'http://gateway.internal:7480', forcePathStyle: false },
      lines: ['set $s3_object_path "/site-a$imageproxy_stem";', 'set $s3_host "images.gateway.internal:7480";', 'server images.gateway.internal:7480;'],
    },
    {
      what: 'AWS (no endpoint): https, virtual-hosted, certificate checked',
      s3: { endpoint: null, forcePathStyle: false, region: 'eu-central-1' },
      lines: [
        'set $s3_host "images.s3.eu-central-1.amazonaws.com";',
        'server images.s3.eu-central-1.amazonaws.com:443;',
        'proxy_ssl_verify on;',
        'proxy_ssl_name images.s3.eu-central-1.amazonaws.com;',
        'proxy_pass https://imageproxy_s3$s3_object_path;',
      ],
    },
    { what: 'the cache: path, size, keys zone by size', s3: {}, lines: ['proxy_cache_path "/var/cache/imageproxy" levels=1:2 keys_zone=imageproxy_s3:80m max_size=10g inactive=7d use_temp_path=off;'] },
    { what: 'a small cache: the smallest keys zone', s3: { cacheMaxSize: '64m' }, lines: ['keys_zone=imageproxy_s3:1m max_size=64m'] },
  ];
  for (const { what, s3, lines } of cases) {
    it(what, () => {
      const text = render(s3);
      for (const line of lines) assert.ok(text.includes(line), `${what}: ${line}`);
    });
  }

  it('with formats, a thumbnail link names its class object', () => {
    assert.ok(render({}, ['avif', 'webp']).includes('set $s3_object_path "/images/site-a$imageproxy_stem$imageproxy_class_suffix";'));
  });

  it("the gateway's errors are nginx's own answers; its 404 goes to the app", () => {
    const text = render({});
    for (const line of [
      'error_page 404 = @imageproxy_app;',
      'error_page 502 503 504 = /_imageproxy_error/storage_unavailable;',
      'error_page 401 403 = /_imageproxy_error/storage_denied;',
      'error_page 301 302 307 308 400 = /_imageproxy_error/storage_failed;',
      'add_header Retry-After 5 always;',
      'proxy_intercept_errors on;',
    ]) {
      assert.ok(text.includes(line), line);
    }
  });

  it('the tree config has no bucket in it', () => {
    const text = renderServerBlock(exampleRenderInput());
    for (const word of ['proxy_cache', 's3sign', '$s3_', 'storage_unavailable']) assert.ok(!text.includes(word), word);
  });

  const refused: Array<{ what: string; s3: Partial<NginxS3Input>; key: string }> = [
    { what: 'an endpoint with a path', s3: { endpoint: 'http://127.0.0.1:7480/s3' }, key: 'storage.endpoint' },
    { what: 'an endpoint that is no URL', s3: { endpoint: 'gateway:7480' }, key: 'storage.endpoint' },
    { what: 'virtual-hosted on an IP address', s3: { endpoint: 'http://[::1]:7480', forcePathStyle: false }, key: 'storage.forcePathStyle' },
    { what: 'a cache size without a unit', s3: { cacheMaxSize: '10' }, key: 'storage.cacheMaxSize' },
    { what: 'a cache directory nginx cannot quote', s3: { cacheDir: '/var/cache/$x' }, key: 'storage.cacheDir' },
    { what: 'a prefix without its slash', s3: { prefix: 'site-a' }, key: 'storage.prefix' },
  ];
  for (const { what, s3, key } of refused) {
    it(`refused: ${what}`, () => {
      assert.throws(() => render(s3), (error: unknown) => error instanceof ConfigError && error.key === key);
    });
  }
});
