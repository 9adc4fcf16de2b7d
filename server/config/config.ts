/**
 * Configuration: one typed object, built as defaults < JSON file < IMAGEPROXY_* env <
 * command-line flags, then validated once with errors that name the key. Every setting
 * (type, range, default, variable, flag, doc) is declared once, in server/config/schema.ts;
 * this module reads the layers and applies the schema. Pure except `readConfigFile`, the
 * one function that touches the disk.
 */
import { readFileSync } from 'node:fs';
import type { z } from 'zod';
import { CONFIG_SCHEMA, OVERRIDES, REMOVED_SETTINGS, SETTINGS, integer, listenAddress, storageCredentialRefusal, type TextForm } from './schema.js';

export { BUCKET_NAME_PATTERN, PREFIX_PATTERN } from './schema.js';

export type Config = z.output<typeof CONFIG_SCHEMA>;

export class ConfigError extends Error {
  constructor(
    readonly key: string,
    message: string,
  ) {
    super(`config ${key}: ${message}`);
    this.name = 'ConfigError';
  }
}

/** A partial config as read from a file, the environment or flags (not yet validated). */
export type ConfigLayer = Record<string, unknown>;

export function readConfigFile(path: string): ConfigLayer {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new ConfigError('--config', `cannot read ${path}: ${(error as Error).message}`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw new ConfigError('--config', `${path} is not valid JSON: ${(error as Error).message}`);
  }
  if (!isPlainObject(parsed)) throw new ConfigError('--config', `${path} must hold a JSON object`);
  return parsed;
}

/**
 * Environment variables and the config key each one sets, from the schema. Lists are
 * comma-separated; `IMAGEPROXY_BUCKETS` is `i,f,t,old:legacy`.
 */
const ENV_KEYS: ReadonlyArray<{ env: string; key: string; form: TextForm; nullWord: string | null }> = SETTINGS.flatMap((setting) =>
  setting.meta.env === undefined ? [] : [{ env: setting.meta.env, key: setting.key, form: setting.form, nullWord: setting.meta.nullWord ?? null }],
);

/** Sets a dotted key (`limits.maxBytes`) in a layer. */
export function setKey(layer: ConfigLayer, dottedKey: string, value: unknown): void {
  const parts = dottedKey.split('.');
  let target: ConfigLayer = layer;
  for (const part of parts.slice(0, -1)) {
    const next = target[part];
    if (!isPlainObject(next)) target[part] = {};
    target = target[part] as ConfigLayer;
  }
  target[parts[parts.length - 1] as string] = value;
}

/**
 * The value a variable or flag (`source`) spells as text. `nullWord` (or nothing at all)
 * means null where the setting may be null.
 */
export function parseSettingText(source: string, key: string, form: TextForm, nullWord: string | null, raw: string): unknown {
  if (nullWord !== null && (raw.trim() === '' || raw.trim().toLowerCase() === nullWord)) return null;
  const items = raw.split(',').map((item) => item.trim()).filter((item) => item !== '');
  switch (form) {
    case 'string':
      return raw;
    case 'number': {
      const value = Number(raw);
      if (raw.trim() === '' || !Number.isFinite(value)) throw new ConfigError(key, `${source}=${raw} is not a number`);
      return value;
    }
    case 'boolean':
      if (/^(1|true|yes|on)$/i.test(raw)) return true;
      if (/^(0|false|no|off)$/i.test(raw)) return false;
      throw new ConfigError(key, `${source}=${raw} is not a boolean (true/false)`);
    case 'list':
      return items;
    case 'numberList':
      return items.map((item) => {
        const value = Number(item);
        if (!Number.isFinite(value)) throw new ConfigError(key, `${source}: ${item} is not a number`);
        return value;
      });
    case 'buckets':
      return Object.fromEntries(
        items.map((item) => {
          const [bucketName = '', legacyFlag, ...extra] = item.split(':');
          if (extra.length > 0 || (legacyFlag !== undefined && legacyFlag !== 'legacy')) {
            throw new ConfigError(key, `${source}: ${item}: only ':legacy' may follow a bucket name`);
          }
          return [bucketName, { legacySignatures: legacyFlag === 'legacy' }];
        }),
      );
  }
}

export function envLayer(env: NodeJS.ProcessEnv): ConfigLayer {
  const layer: ConfigLayer = {};
  // A misspelt variable (IMAGEPROXY_SECRET for IMAGEPROXY_SECRETS) must not pass silently:
  // serve would generate a random secret and refuse every link.
  for (const name of Object.keys(env)) {
    if (name.startsWith('IMAGEPROXY_') && !ENV_KEYS.some((entry) => entry.env === name)) {
      const removed = Object.values(REMOVED_SETTINGS).find((setting) => setting.env === name);
      if (removed !== undefined) throw new ConfigError(name, removed.removal);
      if (name.startsWith('IMAGEPROXY_STORAGE_')) {
        const credentials = storageCredentialRefusal(name.slice('IMAGEPROXY_STORAGE_'.length).replace(/_/g, ''));
        if (credentials !== null) throw new ConfigError(name, credentials);
      }
      throw new ConfigError(name, `unknown environment variable (known: ${ENV_KEYS.map((entry) => entry.env).join(', ')})`);
    }
  }
  for (const { env: name, key, form, nullWord } of ENV_KEYS) {
    const raw = env[name];
    if (raw !== undefined) setKey(layer, key, parseSettingText(name, key, form, nullWord, raw));
  }
  return layer;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Deep merge for plain objects; arrays and scalars of later layers replace earlier ones. */
function mergeLayers(base: ConfigLayer, layer: ConfigLayer): ConfigLayer {
  const merged: ConfigLayer = { ...base };
  for (const [key, value] of Object.entries(layer)) {
    if (value === undefined) continue;
    const previous = Object.hasOwn(merged, key) ? merged[key] : undefined;
    // Buckets are replaced as a whole: a file listing buckets means exactly those buckets.
    const next = key !== 'buckets' && isPlainObject(previous) && isPlainObject(value) ? mergeLayers(previous, value) : value;
    // defineProperty, not `merged[key] =`: a JSON `__proto__` key must stay an own key (and be
    // refused as unknown) instead of silently replacing the prototype.
    Object.defineProperty(merged, key, { value: next, enumerable: true, writable: true, configurable: true });
  }
  return merged;
}

// ---- validation ----------------------------------------------------------------------

/** `limits.maxBytes`, `sizes[1]`: the key as an admin writes it. */
function keyOf(path: readonly PropertyKey[]): string {
  return path.reduce<string>((key, part) => {
    if (typeof part === 'number') return `${key}[${part}]`;
    return key === '' ? String(part) : `${key}.${String(part)}`;
  }, '');
}

/**
 * The error an admin sees: the first problem, an unknown key before any other (a
 * misspelt key explains the values that look wrong), then a group's check that overrides
 * a key's own, named by its full key.
 */
function configErrorOf(error: z.ZodError, prefix = ''): ConfigError {
  const rank = (issue: z.core.$ZodIssue): number => {
    if (issue.code === 'unrecognized_keys') return 0;
    return issue.code === 'custom' && issue.params?.[OVERRIDES] === true ? 1 : 2;
  };
  const issues = [...error.issues].sort((a, b) => rank(a) - rank(b));
  const issue = issues[0];
  if (issue === undefined) return new ConfigError(prefix, 'invalid');
  const key = keyOf(prefix === '' ? issue.path : [prefix, ...issue.path]);
  if (issue.code === 'unrecognized_keys') {
    // A credential among them first: its refusal says where credentials go instead.
    const name = (key === 'storage' ? issue.keys.find((candidate) => storageCredentialRefusal(candidate) !== null) : undefined) ?? issue.keys[0] ?? '';
    const unknownKey = key === '' ? name : `${key}.${name}`;
    const credentials = key === 'storage' ? storageCredentialRefusal(name) : null;
    if (credentials !== null) return new ConfigError(unknownKey, credentials);
    return new ConfigError(unknownKey, Object.hasOwn(REMOVED_SETTINGS, unknownKey) ? (REMOVED_SETTINGS[unknownKey]?.removal ?? '') : 'unknown key');
  }
  return new ConfigError(key, issue.message);
}

/** `value` checked by `schema`, or a ConfigError naming `key`. */
function checked<S extends z.ZodType>(key: string, schema: S, value: unknown): z.output<S> {
  const result = schema.safeParse(value);
  if (!result.success) throw configErrorOf(result.error, key);
  return result.data;
}

/** A `host:port`, as every listen setting is checked. */
export function expectListen(key: string, value: unknown): string {
  return checked(key, listenAddress(), value);
}

/** An integer from min to max, with the message of every integer setting. */
export function expectInteger(key: string, value: unknown, min: number, max = Number.MAX_SAFE_INTEGER): number {
  return checked(key, integer(min, max), value);
}

/** The layers merged, checked against the schema; absent keys take their defaults. */
function validateConfig(raw: ConfigLayer): Config {
  const result = CONFIG_SCHEMA.safeParse(raw);
  if (!result.success) throw configErrorOf(result.error);
  // A config of its own: nothing a caller changes reaches the schema's defaults.
  return structuredClone(result.data);
}

/** Defaults, each with its reason (server/config/schema.ts). */
export const DEFAULT_CONFIG: Config = validateConfig({});

/** defaults < file < env < flags, validated. */
export function buildConfig(layers: { file?: ConfigLayer; env?: ConfigLayer; flags?: ConfigLayer }): Config {
  let merged: ConfigLayer = {};
  for (const layer of [layers.file, layers.env, layers.flags]) {
    if (layer !== undefined) merged = mergeLayers(merged, layer);
  }
  return validateConfig(merged);
}

/** Host and port of a validated `host:port` (brackets of an IPv6 host removed). */
export function splitListen(listen: string): { host: string; port: number } {
  const colon = listen.lastIndexOf(':');
  const host = listen.slice(0, colon).replace(/^\[(.*)\]$/, '$1');
  return { host, port: Number(listen.slice(colon + 1)) };
}
