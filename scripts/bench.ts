/**
 * `npm run bench`: the figures that matter, each measured side by side in one run so the
 * ratio holds on a shared, noisy machine (quote ratios and medians, not absolute rates).
 *
 * 1. A cache hit through nginx + njs against plain nginx serving the same file without
 *    checks (needs nginx, libnginx-mod-http-js and wrk: apt-get install nginx
 *    libnginx-mod-http-js wrk).
 * 2. One thumbnail with sharp against jimp, same inputs.
 */
import { benchNginx, printNginxResult } from './bench-nginx.js';
import { benchResize, printResizeRows } from './bench-resize.js';

console.log('== cache hit: nginx + njs link check vs plain nginx static, same file, same run ==');
try {
  printNginxResult(await benchNginx());
} catch (error) {
  console.log(`skipped: ${(error as Error).message}`);
}
console.log('');
console.log('== thumbnail: sharp vs jimp, same inputs, same run ==');
printResizeRows(await benchResize());
