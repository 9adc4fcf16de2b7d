/*
 * imageproxy link check for nginx (njs 0.7.9).
 *
 * The same URL contract as server/link.ts, server/sizes.ts, server/signing.ts,
 * server/weeks.ts and server/layout.ts, written for njs: `js_set` turns the request line
 * into one variable that the server block (rendered by server/nginxConfig.ts) acts on:
 *
 *   "/{bucket}/{k0}/{k1}/{key}[.{label}]"  signed link: the file stem `try_files` tries
 *                                          with .jpg .png .webp .gif .avif, then the app
 *   "bad_signature"                        well-formed link, signature wrong or expired:
 *                                          nginx answers 410 itself
 *   ""                                     anything else (not GET/HEAD, percent-encoded
 *                                          path, wrong segments, unknown bucket, bad
 *                                          ext_url or size): the app answers the precise
 *                                          400/404/405, so error bodies have one source
 *
 * When in doubt the answer is "", never a stem: the app re-checks everything, so a case
 * this script does not know costs speed, not correctness. A stem is only ever built from
 * a configured bucket name, the sha256 key and a size label of digits: no request text
 * reaches a file path.
 *
 * njs 0.7.9 re-runs module top-level code on every request (measured: a loop at the top
 * level slows every request), so nothing is precomputed here: the generated config
 * module holds lookup tables ready to use, and this file declares constants and
 * functions only. A hit costs one regex exec, one HMAC (a fresh link matches the first
 * candidate week), one sha256 and a few string joins: about 10 µs of worker CPU over
 * plain static serving (scripts/bench-nginx.ts). No regex split or replace, no Date
 * objects, no charCodeAt loops on the hit path: each of those measured costlier in nginx.
 *
 * The contract's numbers (ext_url length limit, signature length and bytes), the allowed
 * sizes with a ready size segment -> label table, and the week rule come from the
 * generated config module (server/nginxConfig.ts renderConfigModule), rendered from the
 * TypeScript: this file holds no copy of them.
 *
 * Written for njs 0.7.9: no for...of, no crypto.timingSafeEqual, no sha512.
 */
import config from 'imageproxy_config.js';

var crypto = require('crypto');

var DAY_SECONDS = 86400;
var WEEK_SECONDS = 7 * DAY_SECONDS;
// The alphabets of server/link.ts and server/sizes.ts; lengths come from the config module.
var BASE64URL_PATTERN = /^[A-Za-z0-9_-]+={0,2}$/;
var SIGNATURE_ALPHABET = /^[A-Za-z0-9_-]+$/;
var SIZE_PATTERN = /^(\d*)x(\d*)$/; // any number of digits: a disallowed value is ignored
/*
 * The hit path: one regex for the whole well-formed link (bucket, size, signature,
 * ext_url, /proxy) instead of a split and two tests (~0.9 µs against ~3 µs). A path it
 * does not match is classified by refusal() to say which error the app will answer.
 */
var LINK_PATTERN = /^\/([A-Za-z0-9_-]+)\/([^\/]*)\/([A-Za-z0-9_-]+)\/([A-Za-z0-9_-]+={0,2})(\/proxy)?$/;

/* ---- weeks (server/weeks.ts) ------------------------------------------------------- */
/*
 * Integer calendar math (H. Hinnant's civil-from-days): in nginx, three `new Date()`
 * cost ~1.6 µs per request, this a fraction of that. Days count from 1970-01-01 and are
 * never negative here, so `| 0` is Math.floor.
 */

/* The proleptic Gregorian year holding day number `day`. */
function yearOfDay(day) {
    var z = day + 719468; // days since 0000-03-01
    var era = (z / 146097) | 0;
    var dayOfEra = z - era * 146097;
    var yearOfEra = ((dayOfEra - ((dayOfEra / 1460) | 0) + ((dayOfEra / 36524) | 0) - ((dayOfEra / 146096) | 0)) / 365) | 0;
    var dayOfYear = dayOfEra - (365 * yearOfEra + ((yearOfEra / 4) | 0) - ((yearOfEra / 100) | 0));
    var marchBasedMonth = ((5 * dayOfYear + 2) / 153) | 0; // 10 and 11 are January and February
    return yearOfEra + era * 400 + (marchBasedMonth >= 10 ? 1 : 0);
}

/* The day number of 1 January of `year`. */
function firstDayOfYear(year) {
    var y = year - 1; // January counts with the previous March-based year
    var era = (y / 400) | 0;
    var yearOfEra = y - era * 400;
    return era * 146097 + 365 * yearOfEra + ((yearOfEra / 4) | 0) - ((yearOfEra / 100) | 0) + 306 - 719468;
}

function twoDigits(week) {
    return week < 10 ? '0' + week : '' + week;
}

/*
 * The `YYYYWW` suffixes of the instant `seconds` (UTC): [ISO week-year + ISO week
 * (PHP date('oW')), calendar year + ISO week (PHP date('YW'))]. The two differ only in
 * the days around New Year; the second is accepted only with calendarYearWeeks.
 */
function instantSuffixes(seconds) {
    var day = Math.floor(seconds / DAY_SECONDS);
    var thursday = day - (day + 3) % 7 + 3; // 1970-01-01 was a Thursday; the ISO week is its Thursday's
    var isoYear = yearOfDay(thursday);
    var ww = twoDigits((((thursday - firstDayOfYear(isoYear)) / 7) | 0) + 1);
    return [isoYear + ww, yearOfDay(day) + ww];
}

/*
 * The instants whose weeks are accepted at `nowSeconds`: now, now + skew (signers ahead
 * of UTC roll over first) and now - 7 days (links stay valid for the previous week).
 * Now comes first because most links are fresh; the set is acceptedWeeks()'s.
 */
function acceptedInstant(index, nowSeconds, skewSeconds) {
    if (index === 0) return nowSeconds;
    return index === 1 ? nowSeconds + skewSeconds : nowSeconds - WEEK_SECONDS;
}
var ACCEPTED_INSTANTS = 3;

/* How many of instantSuffixes()' two rules are accepted: ISO, and calendar on request. */
function ruleCount(calendarYearWeeks) {
    return calendarYearWeeks === true ? 2 : 1;
}

/* Every accepted suffix at `nowSeconds`, without repeats (for tests and the docs). */
function weekSuffixes(nowSeconds, skewSeconds, calendarYearWeeks) {
    var out = [];
    var rules = ruleCount(calendarYearWeeks);
    for (var i = 0; i < ACCEPTED_INSTANTS; i++) {
        var pair = instantSuffixes(acceptedInstant(i, nowSeconds, skewSeconds));
        for (var j = 0; j < rules; j++) {
            if (out.indexOf(pair[j]) < 0) out.push(pair[j]);
        }
    }
    return out;
}

/* ---- signature (server/signing.ts) --------------------------------------------------- */

/*
 * Whether the first `bytes` bytes of the HMAC `expected` equal `given` (the bytes the
 * signature decodes to, exactly: 16 characters × 6 bits = 96 bits = 12 bytes), in
 * constant time: every byte is compared, no early exit. Indexing Buffers costs a third
 * of a charCodeAt() loop over the base64url strings.
 */
function sameSignature(expected, given, bytes) {
    var diff = 0;
    for (var i = 0; i < bytes; i++) {
        diff |= expected[i] ^ given[i];
    }
    return diff === 0;
}

function hmac(key, message) {
    return crypto.createHmac('sha256', key).update(message).digest();
}

/* Whether `signature` is valid under week `suffix` with any secret (and scheme). */
function signedUnder(suffix, given, message, legacyMessage, cfg) {
    var secrets = cfg.secrets;
    var bytes = cfg.signatureBytes;
    for (var s = 0; s < secrets.length; s++) {
        var key = secrets[s] + suffix;
        if (sameSignature(hmac(key, message), given, bytes)) return true;
        if (legacyMessage !== null && sameSignature(hmac(key, legacyMessage), given, bytes)) return true;
    }
    return false;
}

/*
 * Whether `signature` signs `signed` (ext_url [+ "/proxy"]) for `bucket` under any secret
 * and any accepted week. Each comparison is constant-time; the search stops at the first
 * match, which tells a holder of a valid link only which week it was signed in. Week
 * suffixes are computed as needed: a fresh link costs one HMAC and one week.
 */
function signatureValid(signature, bucket, signed, legacy, nowSeconds, cfg) {
    var given = Buffer.from(signature, 'base64url');
    var message = bucket + '/' + signed;
    var legacyMessage = legacy ? signed : null;
    var tried = [];
    var rules = ruleCount(cfg.calendarYearWeeks);
    for (var i = 0; i < ACCEPTED_INSTANTS; i++) {
        var pair = instantSuffixes(acceptedInstant(i, nowSeconds, cfg.skewSeconds));
        for (var j = 0; j < rules; j++) {
            var suffix = pair[j];
            if (tried.indexOf(suffix) >= 0) continue;
            if (signedUnder(suffix, given, message, legacyMessage, cfg)) return true;
            tried.push(suffix);
        }
    }
    return false;
}

/* ---- size (server/sizes.ts) --------------------------------------------------------- */

/* The allowed integer in `digits`, printed plainly, or '' when empty or not allowed. */
function allowedSize(digits, sizes) {
    if (digits === '') return '';
    var printed = '' + Number(digits); // "0150" -> "150"
    return sizes[printed] === true ? printed : '';
}

/*
 * The variant label of a size segment: '' for full, '150x' / 'x200' / '250x250' for a
 * box, null when the size is malformed or nothing allowed remains (the app says 400).
 * Segments made of allowed sizes are in the generated table; other digit forms
 * ('0150x', '150x999') are parsed as server/sizes.ts does.
 */
function sizeLabel(segment, cfg) {
    if (segment === 'full') return '';
    var listed = cfg.sizeLabels[segment];
    // typeof: inherited properties ("constructor", ...) are never labels.
    if (typeof listed === 'string') return listed;
    var sizes = cfg.sizes;
    var match = SIZE_PATTERN.exec(segment);
    if (match === null) return null;
    var height = allowedSize(match[1], sizes);
    var width = allowedSize(match[2], sizes);
    if (height === '' && width === '') return null;
    return height + 'x' + width;
}

/* ---- the link --------------------------------------------------------------------- */

/*
 * Why a path (query removed) that LINK_PATTERN does not match is refused, in the order
 * of parseLink() in server/link.ts: 'bad_path', 'unknown_bucket', 'bad_signature' or
 * 'bad_url'. Only 'bad_signature' is answered by nginx; the rest go to the app.
 */
function refusal(path, cfg) {
    // The app decodes percent-escapes per segment; leave such rare paths to it.
    if (path.charCodeAt(0) !== 47 || path.indexOf('%') >= 0) return 'bad_path';
    var segments = path.substring(1).split('/');
    var count = segments.length;
    if (count !== 4 && count !== 5) return 'bad_path';
    if (count === 5 && segments[4] !== 'proxy') return 'bad_path';
    var legacy = cfg.buckets[segments[0]];
    if (legacy !== true && legacy !== false) return 'unknown_bucket';
    if (segments[2].length !== cfg.signatureLength || !SIGNATURE_ALPHABET.test(segments[2])) return 'bad_signature';
    if (!BASE64URL_PATTERN.test(segments[3])) return 'bad_url';
    return 'bad_path'; // not reached for paths LINK_PATTERN rejects; the app decides
}

/*
 * Checks a raw request path (as in $request_uri: query string allowed, never decoded)
 * at `nowSeconds` against `cfg` (the shape of the generated imageproxy_config.js).
 * Returns the file stem ("/i/A/b/{key}" or "/i/A/b/{key}.150x") for a validly signed
 * link, or the error code of server/errors.ts the app would answer with: 'bad_signature'
 * (nginx answers it), 'bad_path', 'unknown_bucket', 'bad_url' or 'bad_size'. The
 * refusals come in the order of parseLink() in server/link.ts.
 */
function verifyLink(requestUri, nowSeconds, cfg) {
    var path = requestUri;
    var query = path.indexOf('?');
    if (query >= 0) path = path.substring(0, query);
    var link = LINK_PATTERN.exec(path);
    if (link === null) return refusal(path, cfg);

    var bucket = link[1];
    var legacy = cfg.buckets[bucket];
    // Booleans only: inherited properties ("constructor", ...) are never buckets.
    if (legacy !== true && legacy !== false) return 'unknown_bucket';
    if (link[3].length !== cfg.signatureLength) return 'bad_signature';
    var extUrl = link[4];
    if (extUrl.length > cfg.maxExtUrlLength) return 'bad_url';
    var proxy = link[5] !== undefined;
    // With /proxy the size is ignored: pass-through serves the stored original.
    var label = proxy ? '' : sizeLabel(link[2], cfg);
    if (label === null) return 'bad_size';

    var signed = proxy ? extUrl + '/proxy' : extUrl;
    if (!signatureValid(link[3], bucket, signed, legacy, nowSeconds, cfg)) return 'bad_signature';

    // server/layout.ts: key = base64url(sha256(decoded URL bytes)), 43 characters.
    // update(text, 'base64url') decodes as Buffer.from() does, without the Buffer.
    var key = crypto.createHash('sha256').update(extUrl, 'base64url').digest('base64url');
    var stem = '/' + bucket + '/' + key.charAt(0) + '/' + key.charAt(1) + '/' + key;
    return label === '' ? stem : stem + '.' + label;
}

/* ---- nginx entry point ------------------------------------------------------------ */

/*
 * js_set handler: the stem, "bad_signature" (410 by nginx) or "" (to the app). It reads
 * $request_uri, the raw request line, as the app does (Express req.path): no merged
 * slashes or decoded escapes that the app would not see. If it throws, nginx leaves the
 * variable empty, which sends the request to the app.
 */
function linkStem(r) {
    var method = r.method;
    if (method !== 'GET' && method !== 'HEAD') return '';
    var result = verifyLink(r.variables.request_uri, Math.floor(Date.now() / 1000), config);
    if (result.charCodeAt(0) === 47 || result === 'bad_signature') return result;
    return '';
}

/*
 * js_header_filter of the error locations (server/nginxConfig.ts). It runs before
 * nginx's add_header, and deletes what an earlier pass of the same request left: the
 * app's Cache-Control for the image, copied on X-Accel-Redirect before nginx opened the
 * file (then unreadable or gone), or the file headers of a hit whose Range turned out
 * unsatisfiable. The error location's add_header lines are then the only ones.
 */
function clearFileHeaders(r) {
    var names = config.fileHeaderNames;
    for (var index = 0; index < names.length; index++) {
        delete r.headersOut[names[index]];
    }
}

export default {
    linkStem: linkStem,
    clearFileHeaders: clearFileHeaders,
    verifyLink: verifyLink,
    weekSuffixes: weekSuffixes,
    sizeLabel: sizeLabel
};
