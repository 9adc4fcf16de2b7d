/**
 * A real nginx proxying GETs to a real Ceph RADOS Gateway with the Authorization header
 * nginx/s3sign.js computes: the private object's bytes come back (names needing
 * percent-encoding included, a Range passed through unsigned), a wrong secret gets the
 * gateway's 403, a missing object its 404. Objects are written by the S3 object store
 * (server/storage/s3Store.ts) under a prefix, as the app will write them.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { NJS_MODULE_PATH } from '../server/deploy/nginxConfig.js';
import { imageObjectName } from '../server/storage/objectNames.js';
import { S3ObjectStore } from '../server/storage/s3Store.js';
import { assertSameBytes, makeTempRoot, removeTempRoot, request } from './helpers.js';
import { NJS_DIR, freePort, nginxMissing, startNginx, testWorkerUser, type RunningNginx } from './nginxHarness.js';
import { cephMissing, gatewayStoreSettings, startGateway, type RunningGateway } from './rgwHarness.js';

const PREFIX = 'site-a/images/';
const KEY = 'J2oawAuk8OpH7ur8okKE9BvHjcWTrx8EhhWs66RKudk';

/** An nginx string literal: the values here are ours (ports, generated keys), quoted against spaces. */
function quoted(value: string): string {
  assert.doesNotMatch(value, /["\\$\n]/, 'no quote, backslash, $ or newline in a config value');
  return `"${value}"`;
}

function signedLocation(path: string, gateway: RunningGateway, secretAccessKey: string): string {
  return `
        location ~ "^/${path}/(?<object_name>.+)$" {
            set $s3_object_path "/${gateway.bucket}/${PREFIX}$object_name";
            set $s3_host ${quoted(`127.0.0.1:${gateway.port}`)};
            set $s3_region ${quoted(gateway.region)};
            set $s3_access_key_id ${quoted(gateway.credentials.accessKeyId)};
            set $s3_secret_access_key ${quoted(secretAccessKey)};
            set $s3_signing_time $msec;
            proxy_pass_request_headers off;
            proxy_set_header Host $s3_host;
            proxy_set_header x-amz-date $s3_amz_date;
            proxy_set_header x-amz-content-sha256 UNSIGNED-PAYLOAD;
            proxy_set_header Authorization $s3_authorization;
            proxy_set_header Range $http_range;
            proxy_set_header Connection "";
            proxy_http_version 1.1;
            proxy_pass http://s3_gateway$s3_object_uri;
        }`;
}

function nginxConf(prefixDir: string, port: number, gateway: RunningGateway): string {
  const user = testWorkerUser();
  return `load_module ${NJS_MODULE_PATH};
${user === undefined ? '' : `user ${user};`}
daemon off;
master_process on;
worker_processes 1;
pid ${prefixDir}/nginx.pid;
error_log ${prefixDir}/error.log warn;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path ${prefixDir}/client_body_temp;
    proxy_temp_path ${prefixDir}/proxy_temp;
    fastcgi_temp_path ${prefixDir}/fastcgi_temp;
    uwsgi_temp_path ${prefixDir}/uwsgi_temp;
    scgi_temp_path ${prefixDir}/scgi_temp;
    js_path ${quoted(`${NJS_DIR}/`)};
    js_import s3sign from s3sign.js;
    js_set $s3_object_uri s3sign.objectUri;
    js_set $s3_amz_date s3sign.amzDate;
    js_set $s3_authorization s3sign.authorization;
    upstream s3_gateway {
        server 127.0.0.1:${gateway.port};
        keepalive 4;
    }
    server {
        listen 127.0.0.1:${port};
${signedLocation('signed', gateway, gateway.credentials.secretAccessKey)}
${signedLocation('wrong-secret', gateway, 'not-the-secret')}
    }
}
`;
}

describe('nginx signs its GETs to a real Ceph RGW with nginx/s3sign.js', { skip: nginxMissing() ?? cephMissing() ?? false }, () => {
  let gateway: RunningGateway;
  let store: S3ObjectStore;
  let nginx: RunningNginx | undefined;
  let prefixDir = '';
  let base = '';

  const objects = new Map<string, Buffer>([
    [imageObjectName('i', KEY, `${KEY}.150x`), randomBytes(100 * 1024)],
    [imageObjectName('i', KEY, KEY), randomBytes(3000)],
    ['odd/a b+c=d ü (1)!*.png', randomBytes(500)],
  ]);

  before(async () => {
    gateway = await startGateway();
    store = new S3ObjectStore(gatewayStoreSettings(gateway, PREFIX));
    for (const [name, bytes] of objects) await store.put(name, bytes, { contentType: 'image/png' });
    prefixDir = await makeTempRoot('imageproxy-s3nginx-');
    const port = await freePort();
    base = `http://127.0.0.1:${port}`;
    nginx = await startNginx(prefixDir, nginxConf(prefixDir, port, gateway), port);
  });

  after(async () => {
    await nginx?.stop();
    store?.close();
    await gateway?.stop();
    if (prefixDir !== '') await removeTempRoot(prefixDir);
  });

  it('signed GETs return each object\'s bytes and type', async () => {
    for (const [name, bytes] of objects) {
      const path = `/signed/${name.split('/').map(encodeURIComponent).join('/')}`;
      const answer = await request(base, path);
      assert.equal(answer.status, 200, name);
      assert.equal(answer.headers.get('content-type'), 'image/png', name);
      assertSameBytes(answer.body, bytes, name);
    }
  });

  it('a Range passes through unsigned: 206 with the slice', async () => {
    const [name, bytes] = [...objects][0] ?? ['', Buffer.alloc(0)];
    const answer = await request(base, `/signed/${name}`, { headers: { range: 'bytes=10-19' } });
    assert.equal(answer.status, 206);
    assert.equal(answer.headers.get('content-range'), `bytes 10-19/${bytes.length}`);
    assertSameBytes(answer.body, bytes.subarray(10, 20), 'the range');
  });

  it('a missing object: the gateway\'s 404', async () => {
    const answer = await request(base, '/signed/i/J/2/no-such-object');
    assert.equal(answer.status, 404);
  });

  it('a wrong secret: the gateway\'s 403 (SignatureDoesNotMatch)', async () => {
    const [name] = [...objects][0] ?? [''];
    const answer = await request(base, `/wrong-secret/${name}`);
    assert.equal(answer.status, 403);
    assert.ok(answer.body.includes('<Code>SignatureDoesNotMatch</Code>'), 'the gateway names the refusal SignatureDoesNotMatch');
  });
});
