/**
 * Link signatures, as Gazelle's `image_cache_signature()` makes them. Pure (hashing is
 * computation, not I/O); `nowMs` is an argument.
 *
 * signature = base64url(HMAC-SHA256(key = secret + YYYYWW, msg)) truncated to 12 bytes,
 * msg = bucket + "/" + ext_url (+ "/proxy"); legacy links (before buckets existed) sign
 * ext_url (+ "/proxy") alone.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { acceptedWeeks, weekSuffix, type WeekCandidate, type WeekRule } from './weeks.js';

export const SIGNATURE_BYTES = 12;
export const SIGNATURE_LENGTH = 16; // base64url of 12 bytes, never padded
/** A well-formed signature: exactly 16 base64url characters. */
export const SIGNATURE_PATTERN = /^[A-Za-z0-9_-]{16}$/;

export interface SignedParts {
  bucket: string;
  /** ext_url exactly as it appears in the path (padding included or not). */
  extUrl: string;
  proxy: boolean;
}

export function signatureMessage(parts: SignedParts, legacy: boolean): string {
  const signed = parts.proxy ? `${parts.extUrl}/proxy` : parts.extUrl;
  return legacy ? signed : `${parts.bucket}/${signed}`;
}

export function computeSignature(secret: string, suffix: string, message: string): string {
  return createHmac('sha256', secret + suffix)
    .update(message)
    .digest()
    .subarray(0, SIGNATURE_BYTES)
    .toString('base64url');
}

export interface VerifyRules {
  secrets: readonly string[];
  /** Whether this bucket also accepts the pre-bucket (legacy) message. */
  legacyAllowed: boolean;
  nowMs: number;
  skewSeconds: number;
}

export interface SignatureMatch {
  secretIndex: number;
  week: WeekCandidate;
  legacy: boolean;
}

/**
 * The first (secret, week, scheme) under which `signature` is valid, or null.
 * Each comparison is constant-time; every candidate is computed whatever matches, so
 * the time taken does not say which one did.
 */
export function verifySignature(
  signature: string,
  parts: SignedParts,
  rules: VerifyRules,
): SignatureMatch | null {
  // The alphabet check matters: latin1 keeps only the low byte of each character, so
  // without it 'Ł' (U+0141) would compare equal to 'A' (0x41).
  if (!SIGNATURE_PATTERN.test(signature)) return null;
  const given = Buffer.from(signature, 'latin1');
  const schemes = rules.legacyAllowed ? [false, true] : [false];
  let match: SignatureMatch | null = null;
  for (const legacy of schemes) {
    const message = signatureMessage(parts, legacy);
    for (const week of acceptedWeeks(rules.nowMs, rules.skewSeconds)) {
      rules.secrets.forEach((secret, secretIndex) => {
        const expected = Buffer.from(computeSignature(secret, week.suffix, message), 'latin1');
        if (timingSafeEqual(given, expected) && match === null) {
          match = { secretIndex, week, legacy };
        }
      });
    }
  }
  return match;
}

/** A parsed link's signature under a config's secrets, buckets (legacy flags) and skew. */
export function verifyLinkSignature(
  link: SignedParts & { signature: string },
  rules: { secrets: readonly string[]; buckets: Readonly<Record<string, { legacySignatures: boolean }>>; skewSeconds: number; nowMs: number },
): SignatureMatch | null {
  return verifySignature(link.signature, link, {
    secrets: rules.secrets,
    legacyAllowed: rules.buckets[link.bucket]?.legacySignatures ?? false,
    nowMs: rules.nowMs,
    skewSeconds: rules.skewSeconds,
  });
}

/** The signature Gazelle would put in a link made at `atMs` (today's Gazelle: ISO rule). */
export function signLink(
  secret: string,
  parts: SignedParts,
  atMs: number,
  options: { legacy?: boolean; rule?: WeekRule } = {},
): string {
  const suffix = weekSuffix(atMs, options.rule ?? 'iso');
  return computeSignature(secret, suffix, signatureMessage(parts, options.legacy ?? false));
}
