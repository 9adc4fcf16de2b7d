/**
 * What `sign`, `verify` and `decode` decide, as pure functions the CLI only calls (and
 * tests call thousands of times in-process). Signing goes through the same checks as
 * the app, in the same order, so a link `sign` prints is one the app accepts; judging a
 * link follows the app's order too (structure, signature, image URL) and, for a
 * signature that does not verify, tells an expired link from a forged one.
 */
import { ImageproxyError, isImageproxyError } from '../errors.js';
import { storageKey } from './layout.js';
import {
  decodeImageUrl,
  encodeImageUrl,
  formatLink,
  imageUrlBytes,
  parseLink,
  sizeSegment,
  type LinkRules,
  type ParsedLink,
} from './link.js';
import {
  findSigningWeek,
  signLink,
  verifyLinkSignature,
  type PastSignature,
  type SignatureMatch,
} from './signing.js';
import { FULL_SIZE, sizeLabel, type SizeSpec } from './sizes.js';
import type { WeekRule } from './weeks.js';

/** How far back `verify` and `decode` look for the week an expired link was signed in. */
const EXPIRED_SEARCH_WEEKS = 53;

/** The part of the config signing and judging links depends on. */
export interface LinkPolicy {
  buckets: Readonly<Record<string, { legacySignatures: boolean }>>;
  sizes: readonly number[];
  skewSeconds: number;
  calendarYearWeeks: boolean;
}

function rulesOf(policy: LinkPolicy): LinkRules {
  return { buckets: new Set(Object.keys(policy.buckets)), sizes: policy.sizes };
}

export interface SignRequest {
  imageUrl: string;
  bucket: string;
  height?: number;
  width?: number;
  proxy?: boolean;
  /** Sign without the bucket prefix (links from before buckets); the bucket must allow it. */
  legacy?: boolean;
  atMs: number;
}

/** Signs with the first secret, under the year rule the policy's Gazelle uses. */
export interface Signer {
  policy: LinkPolicy;
  secret: string;
}

function sizeOf(request: SignRequest, policy: LinkPolicy): SizeSpec {
  // As Gazelle's image_cache_encode: a proxy link is always full size, whatever was asked.
  if (request.proxy === true || (request.height === undefined && request.width === undefined)) return FULL_SIZE;
  for (const [name, value] of [['height', request.height], ['width', request.width]] as const) {
    // The app ignores a size outside the list: a link with one would not be what was asked.
    if (value !== undefined && !policy.sizes.includes(value)) {
      throw new ImageproxyError('bad_size', `${name} ${value} is not an allowed size (${policy.sizes.join(', ')})`);
    }
  }
  const maxHeight = request.height ?? null;
  const maxWidth = request.width ?? null;
  return { kind: 'box', maxHeight, maxWidth, label: sizeLabel(maxHeight, maxWidth) };
}

/**
 * The link Gazelle would emit for an image URL, or an ImageproxyError with the code the
 * app would answer the link with (`bad_url`, `bad_size`, `unknown_bucket`), or
 * `bad_signature` for a legacy link in a bucket that refuses them. The link is parsed
 * back before it is returned: what is printed is what the app reads.
 */
export function signLinkFor(request: SignRequest, signer: Signer): string {
  const { policy } = signer;
  const rules = rulesOf(policy);
  if (!rules.buckets.has(request.bucket)) {
    throw new ImageproxyError('unknown_bucket', `${request.bucket} is not a configured bucket (${[...rules.buckets].join(', ')})`);
  }
  const legacy = request.legacy ?? false;
  if (legacy && policy.buckets[request.bucket]?.legacySignatures !== true) {
    throw new ImageproxyError('bad_signature', `bucket ${request.bucket} does not accept legacy signatures (buckets.${request.bucket}.legacySignatures)`);
  }
  const proxy = request.proxy ?? false;
  const size = sizeOf(request, policy);
  const extUrl = encodeImageUrl(request.imageUrl);
  const rule: WeekRule = policy.calendarYearWeeks ? 'calendar' : 'iso';
  const signature = signLink(signer.secret, { bucket: request.bucket, extUrl, proxy }, request.atMs, { legacy, rule });
  const path = formatLink({ bucket: request.bucket, size, signature, extUrl, proxy });
  // The app's own checks, in its order: structure and length, then the image URL.
  const parsed = parseLink(path, rules);
  decodeImageUrl(parsed.extUrl);
  return path;
}

export type LinkVerdict =
  /** The app would serve it (or fetch it). */
  | { kind: 'valid'; link: ParsedLink; match: SignatureMatch }
  /**
   * A secret signed it in an older week: a genuine link, too old. The app answers 410.
   * `legacyRefused`: signed under the legacy scheme, which the bucket refuses as well.
   */
  | { kind: 'expired'; link: ParsedLink; signed: PastSignature; legacyRefused: boolean }
  /** No secret signed it in any week of the past year: forged, tampered or an old secret. 410. */
  | { kind: 'wrong'; link: ParsedLink }
  /**
   * Valid now under the legacy scheme (signed over ext_url without the bucket, links from
   * before buckets), which the link's bucket refuses: 410 until
   * `buckets.{bucket}.legacySignatures` is true.
   */
  | { kind: 'legacy'; link: ParsedLink; match: SignatureMatch }
  /** The app refuses it before or after the signature check, with this error. */
  | { kind: 'refused'; link: ParsedLink | null; error: ImageproxyError };

/** Whether the app answers this verdict with 410 (`bad_signature`). */
export function isSignatureRefusal(verdict: LinkVerdict): boolean {
  return (
    verdict.kind === 'expired' ||
    verdict.kind === 'wrong' ||
    verdict.kind === 'legacy' ||
    (verdict.kind === 'refused' && verdict.error.code === 'bad_signature')
  );
}

/** Judges a link path as the app would at `nowMs`, and says why. */
export function judgeLink(
  path: string,
  context: { policy: LinkPolicy; secrets: readonly string[]; nowMs: number },
): LinkVerdict {
  const { policy } = context;
  let link: ParsedLink;
  try {
    link = parseLink(path, rulesOf(policy));
  } catch (error) {
    if (isImageproxyError(error)) return { kind: 'refused', link: null, error };
    throw error;
  }
  const match = verifyLinkSignature(link, { ...policy, secrets: context.secrets, nowMs: context.nowMs });
  if (match === null) {
    // The legacy scheme is looked at even where the bucket refuses it, to say which
    // setting would accept the link; what the app accepts is decided above.
    const withLegacy = { ...policy.buckets, [link.bucket]: { legacySignatures: true } };
    const legacyMatch = verifyLinkSignature(link, { ...policy, buckets: withLegacy, secrets: context.secrets, nowMs: context.nowMs });
    if (legacyMatch !== null) return { kind: 'legacy', link, match: legacyMatch };
    const signed = findSigningWeek(link.signature, link, {
      secrets: context.secrets,
      legacyAllowed: true,
      nowMs: context.nowMs,
      weeks: EXPIRED_SEARCH_WEEKS,
    });
    if (signed === null) return { kind: 'wrong', link };
    return { kind: 'expired', link, signed, legacyRefused: signed.legacy && policy.buckets[link.bucket]?.legacySignatures !== true };
  }
  try {
    decodeImageUrl(link.extUrl);
  } catch (error) {
    if (isImageproxyError(error)) return { kind: 'refused', link, error };
    throw error;
  }
  return { kind: 'valid', link, match };
}

function schemeOf(legacy: boolean): string {
  return legacy ? 'legacy scheme (no bucket prefix)' : 'bucket scheme';
}

/** The setting that makes `bucket` accept legacy links, as the config and the environment write it. */
function legacySetting(bucket: string): string {
  return `buckets.${bucket}.legacySignatures true (IMAGEPROXY_BUCKETS ${bucket}:legacy)`;
}

/** One line: `valid: …`, `expired: …`, `legacy: …`, `wrong: …` or `invalid: {code}: …`. */
export function describeVerdict(verdict: LinkVerdict): string {
  switch (verdict.kind) {
    case 'valid': {
      const { link, match } = verdict;
      return (
        `valid: secret #${match.secretIndex}, week ${match.week.suffix} (${match.week.rule} year rule, ${match.week.instant}), ` +
        `${schemeOf(match.legacy)}; bucket ${link.bucket}, size ${sizeSegment(link.size)}` +
        `${link.proxy ? ', proxy' : ''}, key ${storageKey(imageUrlBytes(link.extUrl))}`
      );
    }
    case 'expired': {
      const { signed } = verdict;
      const weeks = signed.week.weeksAgo;
      const ago = weeks === 0 ? 'this week' : weeks === 1 ? 'about 1 week ago' : `about ${weeks} weeks ago`;
      return (
        `expired: bad_signature: signed with secret #${signed.secretIndex} in week ${signed.week.suffix} ` +
        `(${signed.week.rule} year rule, ${ago}), ${schemeOf(signed.legacy)}; not accepted now` +
        (signed.week.rule === 'calendar' ? ' (the calendar-year rule is accepted only with calendarYearWeeks)' : '') +
        (verdict.legacyRefused
          ? ` (legacy links are accepted in bucket ${verdict.link.bucket} only with ${legacySetting(verdict.link.bucket)})`
          : '')
      );
    }
    case 'legacy': {
      const { link, match } = verdict;
      return (
        `legacy: bad_signature: a valid legacy link (signed without the bucket prefix, as before buckets: ` +
        `secret #${match.secretIndex}, week ${match.week.suffix}, ${match.week.rule} year rule), but bucket ${link.bucket} ` +
        `refuses legacy signatures; set ${legacySetting(link.bucket)} to accept it`
      );
    }
    case 'wrong':
      return (
        `wrong: bad_signature: no configured secret signed this link in any of the past ${EXPIRED_SEARCH_WEEKS} weeks ` +
        '(forged, tampered, or signed with a secret no longer configured)'
      );
    case 'refused':
      return `invalid: ${verdict.error.code}: ${verdict.error.message}`;
  }
}
