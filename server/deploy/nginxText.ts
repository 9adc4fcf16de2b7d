/** Pieces of nginx config text shared by the renderers in server/deploy/. Pure. */
import { ConfigError } from '../config/config.js';

// What may stand inside a double-quoted nginx string without escaping or interpolation.
const QUOTABLE_PATTERN = /^[^"\\$\u0000-\u001f\u007f]*$/;

/** A double-quoted nginx string; refuses what would need escaping or expand a variable. */
export function quote(value: string, key = 'nginx'): string {
  if (!QUOTABLE_PATTERN.test(value)) throw new ConfigError(key, `cannot quote ${JSON.stringify(value)}`);
  return `"${value}"`;
}

export function indent(lines: readonly string[], depth: number): string[] {
  const pad = '    '.repeat(depth);
  return lines.map((line) => (line === '' ? line : pad + line));
}
