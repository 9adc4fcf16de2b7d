/**
 * Size rules for the `{size}` segment. Pure.
 *
 * `full`, or `{h}x{w}` where h and w are each an integer or empty. The signature does not
 * cover the size, so only configured sizes may be produced: a value outside the allowed
 * list is ignored (as imageproxy-py does), and a size with nothing allowed left is refused.
 */
import { ImageproxyError } from '../errors.js';

export type SizeSpec =
  | { kind: 'full' }
  | {
      kind: 'box';
      maxHeight: number | null;
      maxWidth: number | null;
      /** The effective size as written in variant file names: `150x`, `x200`, `250x250`. */
      label: string;
    };

export const FULL_SIZE: SizeSpec = { kind: 'full' };

// Any number of digits: a value outside the allowed list is ignored, however long.
const SIZE_PATTERN = /^(\d*)x(\d*)$/;

function allowedOrNull(digits: string, allowed: readonly number[]): number | null {
  if (digits === '') return null;
  const value = Number(digits);
  return allowed.includes(value) ? value : null;
}

export function sizeLabel(maxHeight: number | null, maxWidth: number | null): string {
  return `${maxHeight ?? ''}x${maxWidth ?? ''}`;
}

export function parseSize(segment: string, allowed: readonly number[]): SizeSpec {
  if (segment === 'full') return FULL_SIZE;
  const match = SIZE_PATTERN.exec(segment);
  if (match === null) throw new ImageproxyError('bad_size', 'size must be full or {h}x{w}');
  const maxHeight = allowedOrNull(match[1] ?? '', allowed);
  const maxWidth = allowedOrNull(match[2] ?? '', allowed);
  if (maxHeight === null && maxWidth === null) {
    throw new ImageproxyError('bad_size', 'no allowed size in link', {
      detail: `size ${JSON.stringify(segment)}, allowed ${allowed.join(',')}`,
    });
  }
  return { kind: 'box', maxHeight, maxWidth, label: sizeLabel(maxHeight, maxWidth) };
}
