/**
 * Link signatures, as Gazelle's `image_cache_signature()` makes them. Pure (hashing is
 * computation, not I/O); `nowMs` is an argument.
 *
 * signature = base64url(HMAC-SHA256(key = secret + YYYYWW, msg)) truncated to 12 bytes,
 * msg = bucket + "/" + ext_url (+ "/proxy"); legacy links (before buckets existed) sign
 * ext_url (+ "/proxy") alone.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { acceptedWeeks, pastWeeks, weekSuffix, type PastWeek, type WeekCandidate, type WeekRule } from './weeks.js';

export const SIGNATURE_BYTES = 12;
/** Characters of a signature in a link: base64url of SIGNATURE_BYTES, unpadded (16). */
export const SIGNATURE_LENGTH = Math.ceil((SIGNATURE_BYTES * 8) / 6);
/** A well-formed signature: the base64url of 12 bytes, 16 characters, never padded. */
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
  /** Also accept the calendar-year rule (Gazelle before 2024-12-30); see server/contract/weeks.ts. */
  calendarYearWeeks?: boolean;
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
    for (const week of acceptedWeeks(rules.nowMs, rules.skewSeconds, rules.calendarYearWeeks ?? false)) {
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
  rules: {
    secrets: readonly string[];
    buckets: Readonly<Record<string, { legacySignatures: boolean }>>;
    skewSeconds: number;
    calendarYearWeeks: boolean;
    nowMs: number;
  },
): SignatureMatch | null {
  return verifySignature(link.signature, link, {
    secrets: rules.secrets,
    legacyAllowed: rules.buckets[link.bucket]?.legacySignatures ?? false,
    nowMs: rules.nowMs,
    skewSeconds: rules.skewSeconds,
    calendarYearWeeks: rules.calendarYearWeeks,
  });
}

export interface PastSignature {
  secretIndex: number;
  week: PastWeek;
  legacy: boolean;
}

/**
 * The most recent past week (1 to `weeks` weeks before `nowMs`, either year rule, the
 * legacy scheme included when the bucket allows it) in which a secret made `signature`,
 * or null: tells an expired link from a forged one. An admin tool's question, not a
 * verifier's; nothing here is accepted.
 */
export function findSigningWeek(
  signature: string,
  parts: SignedParts,
  rules: { secrets: readonly string[]; legacyAllowed: boolean; nowMs: number; weeks: number },
): PastSignature | null {
  if (!SIGNATURE_PATTERN.test(signature)) return null;
  const given = Buffer.from(signature, 'latin1');
  const schemes = rules.legacyAllowed ? [false, true] : [false];
  for (const week of pastWeeks(rules.nowMs, rules.weeks)) {
    for (const legacy of schemes) {
      const message = signatureMessage(parts, legacy);
      for (const [secretIndex, secret] of rules.secrets.entries()) {
        const expected = Buffer.from(computeSignature(secret, week.suffix, message), 'latin1');
        if (timingSafeEqual(given, expected)) return { secretIndex, week, legacy };
      }
    }
  }
  return null;
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
