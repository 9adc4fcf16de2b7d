/** package.json's version, for `--version` and the build_info metric. */
import { readFileSync } from 'node:fs';

let cached: string | undefined;

/** Looked up beside the sources (server/…) and beside the built files (dist/server/…); `unknown` if neither is ours. */
export function packageVersion(): string {
  cached ??= readPackageVersion();
  return cached;
}

function readPackageVersion(): string {
  for (const candidate of ['../../package.json', '../../../package.json']) {
    try {
      const manifest = JSON.parse(readFileSync(new URL(candidate, import.meta.url), 'utf8')) as { name?: unknown; version?: unknown };
      if (manifest.name === 'imageproxy' && typeof manifest.version === 'string') return manifest.version;
    } catch {
      // not this one
    }
  }
  return 'unknown';
}
