/*
 * imageproxy link check for nginx (njs 0.7.9).
 *
 * The same URL contract as server/contract/link.ts, server/contract/sizes.ts, server/contract/signing.ts,
 * server/contract/weeks.ts and server/contract/layout.ts, written for njs: `js_set` turns the request line
 * into one variable that the server block (rendered by server/deploy/nginxConfig.ts) acts on:
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
 * With config `formats`, a second variable, $imageproxy_format_class (formatClass), names
 * the format class of a thumbnail link's client from its Accept header: `avif`, `webp`
 * or `source` (server/contract/accept.ts), '' for every other request; the server block
 * tries that class's files.
 *
 * When in doubt the answer is "", never a stem: the app re-checks everything, so a case
 * this script does not know costs speed, not correctness. A stem is only ever built from
 * a configured bucket name, the sha256 key and a size label of digits: no request text
 * reaches a file path.
 *
 * njs 0.7.9 re-runs module top-level code on every request (a loop at the top level
 * slows every request), that of every module imported at the http level, for every
 * request that runs any js: keep this file and its imports lean, and import no other
 * module beside it. Nothing is precomputed here: the generated config module
 * holds lookup tables ready to use, and this file declares constants and functions
 * only. A hit costs one regex exec, one HMAC (a fresh link matches the first week
 * tried), one sha256 and a few string joins, and builds no array but the match. No regex split or
 * replace, no Date objects, no charCodeAt loops on the hit path: each of those measured
 * costlier in nginx (scripts/bench-nginx.ts measures a hit).
 *
 * The contract's numbers (ext_url length limit, signature length and bytes), the allowed
 * sizes with a ready size segment -> label table, and the week rule come from the
 * generated config module (server/deploy/nginxConfig.ts renderConfigModule), rendered from the
 * TypeScript: this file holds no copy of them.
 *
 * Written for njs 0.7.9: no for...of, no crypto.timingSafeEqual, no sha512.
 */
import config from 'imageproxy_config.js';

var crypto = require('crypto');

var DAY_SECONDS = 86400;
/*
 * The hit path: one regex for the whole well-formed link (bucket, size, signature,
 * ext_url, /proxy) instead of a split and two tests, which cost more. A path it
 * does not match is classified by refusal() to say which error the app will answer.
 */
var LINK_PATTERN = /^\/([A-Za-z0-9_-]+)\/([^\/]*)\/([A-Za-z0-9_-]+)\/([A-Za-z0-9_-]+={0,2})(\/proxy)?$/;

/* ---- weeks (server/contract/weeks.ts) ------------------------------------------------------- */
/*
 * Integer calendar math (H. Hinnant's civil-from-days): cheaper in nginx than
 * `new Date()`. Days count from 1970-01-01 and are
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

/*
 * The `YYYYWW` suffix of day number `day`: ISO week-year + ISO week (PHP date('oW')), or
 * with `calendar` the calendar year + ISO week (PHP date('YW')). The two differ only on
 * the days of ISO weeks 1, 52 and 53 that lie in the neighbouring calendar year, so the
 * calendar year is looked at in those weeks only.
 */
function daySuffix(day, calendar) {
    var thursday = day - (day + 3) % 7 + 3; // 1970-01-01 was a Thursday; the ISO week is its Thursday's
    var isoYear = yearOfDay(thursday);
    var january1 = firstDayOfYear(isoYear);
    var week = (((thursday - january1) / 7) | 0) + 1;
    var year = isoYear;
    if (calendar) {
        if (week === 1) {
            if (day < january1) year = isoYear - 1;
        } else if (week >= 52 && day >= firstDayOfYear(isoYear + 1)) {
            year = isoYear + 1;
        }
    }
    return week < 10 ? year + '0' + week : year + '' + week;
}

/*
 * Visits every accepted suffix at `nowSeconds` once, in the order now, now + skew
 * (signers ahead of UTC roll over first), now - 7 days (links stay valid for the
 * previous week); ISO rule first, the calendar rule after it with calendarYearWeeks.
 * Now comes first because most links are fresh: a fresh link costs one suffix. The skew
 * instant is looked at only when it falls on another day. Repeats are skipped by
 * comparing with the suffixes already visited (no array per request). `visit` is
 * checkSuffix: with `out` an array it collects (tests, docs) and never stops; otherwise
 * it checks the signature and stops at the first match. Returns whether one matched.
 */
function visitAcceptedSuffixes(nowSeconds, cfg, given, message, legacyMessage, out) {
    var calendar = cfg.calendarYearWeeks === true;
    var day = Math.floor(nowSeconds / DAY_SECONDS);
    var s0 = daySuffix(day, false);
    if (checkSuffix(s0, given, message, legacyMessage, cfg, out)) return true;
    var s1 = calendar ? daySuffix(day, true) : s0;
    if (s1 !== s0 && checkSuffix(s1, given, message, legacyMessage, cfg, out)) return true;
    var s2 = s0;
    var s3 = s0;
    var skewDay = Math.floor((nowSeconds + cfg.skewSeconds) / DAY_SECONDS);
    if (skewDay !== day) {
        s2 = daySuffix(skewDay, false);
        if (s2 !== s0 && s2 !== s1 && checkSuffix(s2, given, message, legacyMessage, cfg, out)) return true;
        s3 = calendar ? daySuffix(skewDay, true) : s2;
        if (s3 !== s0 && s3 !== s1 && s3 !== s2 && checkSuffix(s3, given, message, legacyMessage, cfg, out)) return true;
    }
    var s4 = daySuffix(day - 7, false);
    if (s4 !== s0 && s4 !== s1 && s4 !== s2 && s4 !== s3 && checkSuffix(s4, given, message, legacyMessage, cfg, out)) return true;
    if (!calendar) return false;
    var s5 = daySuffix(day - 7, true);
    return s5 !== s0 && s5 !== s1 && s5 !== s2 && s5 !== s3 && s5 !== s4 && checkSuffix(s5, given, message, legacyMessage, cfg, out);
}

/* Every accepted suffix at `nowSeconds`, without repeats (for tests and the docs). */
function weekSuffixes(nowSeconds, skewSeconds, calendarYearWeeks) {
    var out = [];
    var cfg = { skewSeconds: skewSeconds, calendarYearWeeks: calendarYearWeeks };
    visitAcceptedSuffixes(nowSeconds, cfg, null, '', null, out);
    return out;
}

/* ---- signature (server/contract/signing.ts) --------------------------------------------------- */

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

/* Whether `given` is valid under week `suffix` with any secret (and scheme). */
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

/* visitAcceptedSuffixes' visitor: collect into `out`, or check the signature. */
function checkSuffix(suffix, given, message, legacyMessage, cfg, out) {
    if (out !== null) {
        out.push(suffix);
        return false;
    }
    return signedUnder(suffix, given, message, legacyMessage, cfg);
}

/*
 * Whether `signature` signs `signed` (ext_url [+ "/proxy"]) for `bucket` under any secret
 * and any accepted week. Each comparison is constant-time; the search stops at the first
 * match, which tells a holder of a valid link only which week it was signed in.
 *
 * The hit path: a fresh link is signed for this ISO week with the current scheme, so
 * that one HMAC per secret is tried first, inline, before the visitor (which tries it
 * again only for a link it did not match: a refusal or an older link, never a hit).
 */
function signatureValid(signature, bucket, signed, legacy, nowSeconds, cfg) {
    var given = Buffer.from(signature, 'base64url');
    var message = bucket + '/' + signed;
    var secrets = cfg.secrets;
    var bytes = cfg.signatureBytes;
    var suffix = daySuffix(Math.floor(nowSeconds / DAY_SECONDS), false);
    for (var s = 0; s < secrets.length; s++) {
        var expected = crypto.createHmac('sha256', secrets[s] + suffix).update(message).digest();
        var diff = 0;
        for (var i = 0; i < bytes; i++) {
            diff |= expected[i] ^ given[i];
        }
        if (diff === 0) return true;
    }
    return visitAcceptedSuffixes(nowSeconds, cfg, given, message, legacy ? signed : null, null);
}

/* ---- size (server/contract/sizes.ts) --------------------------------------------------------- */

/*
 * Whether `item` is in `list`, a generated string "|a|b|c|" (a string literal costs
 * nothing per request, an object or array is rebuilt on each). Items never hold `|`.
 */
function listed(list, item) {
    return item.indexOf('|') < 0 && list.indexOf('|' + item + '|') >= 0;
}

/* The allowed integer in `digits`, printed plainly, or '' when empty or not allowed. */
function allowedSize(digits, sizes) {
    if (digits === '') return '';
    var printed = '' + Number(digits); // "0150" -> "150"
    return listed(sizes, printed) ? printed : '';
}

/*
 * The variant label of a size segment: '' for full, '150x' / 'x200' / '250x250' for a
 * box, null when the size is malformed or nothing allowed remains (the app says 400).
 * Segments made of allowed sizes are listed as generated, and are their own label; other
 * digit forms ('0150x', '150x999') are parsed as server/contract/sizes.ts does.
 */
function sizeLabel(segment, cfg) {
    if (segment === 'full') return '';
    if (listed(cfg.sizeLabels, segment)) return segment;
    // Any number of digits: a disallowed value is ignored.
    var match = /^(\d*)x(\d*)$/.exec(segment);
    if (match === null) return null;
    var height = allowedSize(match[1], cfg.sizes);
    var width = allowedSize(match[2], cfg.sizes);
    if (height === '' && width === '') return null;
    return height + 'x' + width;
}

/* Whether bucket `name` accepts legacy signatures: true, false, or null when unknown. */
function bucketLegacy(name, cfg) {
    if (listed(cfg.buckets, name)) return false;
    return listed(cfg.legacyBuckets, name) ? true : null;
}

/* ---- the link --------------------------------------------------------------------- */

/*
 * Why a path (query removed) that LINK_PATTERN does not match is refused, in the order
 * of parseLink() in server/contract/link.ts: 'bad_path', 'unknown_bucket', 'bad_signature' or
 * 'bad_url'. Only 'bad_signature' is answered by nginx; the rest go to the app.
 */
function refusal(path, cfg) {
    // The app decodes percent-escapes per segment; leave such rare paths to it.
    if (path.charCodeAt(0) !== 47 || path.indexOf('%') >= 0) return 'bad_path';
    var segments = path.substring(1).split('/');
    var count = segments.length;
    if (count !== 4 && count !== 5) return 'bad_path';
    if (count === 5 && segments[4] !== 'proxy') return 'bad_path';
    if (bucketLegacy(segments[0], cfg) === null) return 'unknown_bucket';
    // The alphabets of server/contract/link.ts; lengths come from the config module.
    if (segments[2].length !== cfg.signatureLength || !/^[A-Za-z0-9_-]+$/.test(segments[2])) return 'bad_signature';
    if (!/^[A-Za-z0-9_-]+={0,2}$/.test(segments[3])) return 'bad_url';
    return 'bad_path'; // not reached for paths LINK_PATTERN rejects; the app decides
}

/*
 * Checks a raw request path (as in $request_uri: query string allowed, never decoded)
 * at `nowSeconds` against `cfg` (the shape of the generated imageproxy_config.js).
 * Returns the file stem ("/i/A/b/{key}" or "/i/A/b/{key}.150x") for a validly signed
 * link, or the error code of server/errors.ts the app would answer with: 'bad_signature'
 * (nginx answers it), 'bad_path', 'unknown_bucket', 'bad_url', 'url_too_long' or
 * 'bad_size'. The refusals come in the order of parseLink() in server/contract/link.ts.
 */
function verifyLink(requestUri, nowSeconds, cfg) {
    var query = requestUri.indexOf('?');
    var path = query < 0 ? requestUri : requestUri.substring(0, query);
    var link = LINK_PATTERN.exec(path);
    if (link === null) return refusal(path, cfg);

    var bucket = link[1];
    var legacy = bucketLegacy(bucket, cfg);
    if (legacy === null) return 'unknown_bucket';
    var signature = link[3];
    if (signature.length !== cfg.signatureLength) return 'bad_signature';
    var extUrl = link[4];
    if (extUrl.length > cfg.maxExtUrlLength) return 'url_too_long';
    var proxy = link[5] !== undefined;
    // With /proxy the size is ignored: pass-through serves the stored original.
    var label = proxy ? '' : sizeLabel(link[2], cfg);
    if (label === null) return 'bad_size';

    if (!signatureValid(signature, bucket, proxy ? extUrl + '/proxy' : extUrl, legacy, nowSeconds, cfg)) return 'bad_signature';

    // server/contract/layout.ts: key = base64url(sha256(decoded URL bytes)), 43 characters.
    // update(text, 'base64url') decodes as Buffer.from() does, without the Buffer.
    var key = crypto.createHash('sha256').update(extUrl, 'base64url').digest('base64url');
    var stem = '/' + bucket + '/' + key.charAt(0) + '/' + key.charAt(1) + '/' + key;
    return label === '' ? stem : stem + '.' + label;
}

/* ---- format class (server/contract/accept.ts) ----------------------------------------- */
/*
 * The port of server/contract/accept.ts: parseQuality, parseAccept, qualityOf,
 * negotiateFormat and formatClassOf with their type annotations deleted. Two changes:
 * the limits come from the generated module, and a character above 0xff counts as
 * obs-text in a quoted string. njs hands a header's valid UTF-8 over decoded (`é` is one
 * character, U+00E9) where Node hands the app its bytes as latin1 (two characters, each
 * obs-text), so this is the same verdict on the same bytes. Read accept.ts for the rules
 * and the reasons; test/njsAccept.test.ts checks this copy against it.
 * Only headers missing from the generated table of known ones (formatClass) get here.
 */

// RFC 9110 tchar: "!#$%&'*+-.^_`|~", digits, letters.
var TOKEN_PUNCTUATION = "!#$%&'*+-.^_`|~";

function isTokenChar(code) {
    if (code >= 0x30 && code <= 0x39) return true; // 0-9
    if (code >= 0x41 && code <= 0x5a) return true; // A-Z
    if (code >= 0x61 && code <= 0x7a) return true; // a-z
    return code < 0x80 && TOKEN_PUNCTUATION.indexOf(String.fromCharCode(code)) !== -1;
}

/* SP or HTAB (OWS). */
function isWhitespace(code) {
    return code === 0x20 || code === 0x09;
}

function parseQuality(text) {
    const length = text.length;
    if (length === 0 || length > 5) return null;
    const first = text.charCodeAt(0);
    if (first !== 0x30 && first !== 0x31) return null; // "0" or "1"
    if (length === 1) return first - 0x30;
    if (text.charCodeAt(1) !== 0x2e) return null; // "."
    let thousandths = 0;
    let scale = 100;
    for (let index = 2; index < length; index++) {
        const digit = text.charCodeAt(index) - 0x30;
        if (digit < 0 || digit > 9) return null;
        thousandths += digit * scale;
        scale = scale / 10;
    }
    if (first === 0x31 && thousandths !== 0) return null; // above 1
    return first === 0x31 ? 1 : thousandths / 1000;
}

function parseAccept(header) {
    const length = header.length;
    if (length > config.maxAcceptLength) return null;
    const elements = [];
    let index = 0;

    const skipWhitespace = () => {
        while (index < length && isWhitespace(header.charCodeAt(index))) index++;
    };
    const readToken = () => {
        const start = index;
        while (index < length && isTokenChar(header.charCodeAt(index))) index++;
        return header.slice(start, index);
    };
    const readQuotedString = () => {
        const start = index;
        index++; // the opening quote
        while (index < length) {
            const code = header.charCodeAt(index);
            if (code === 0x22) {
                index++;
                return header.slice(start, index);
            }
            if (code === 0x5c) {
                // quoted-pair: a backslash and one HTAB, SP, VCHAR or obs-text
                index++;
                if (index >= length) return null;
                const escaped = header.charCodeAt(index);
                if (escaped !== 0x09 && (escaped < 0x20 || escaped === 0x7f)) return null;
            } else if (code !== 0x09 && (code < 0x20 || code === 0x7f)) {
                return null;
            }
            index++;
        }
        return null;
    };

    while (true) {
        skipWhitespace();
        if (index >= length) break;
        if (header.charCodeAt(index) === 0x2c) {
            index++; // an empty list element
            continue;
        }
        if (elements.length >= config.maxAcceptElements) return null;

        const type = readToken().toLowerCase();
        if (type === '' || header.charCodeAt(index) !== 0x2f) return null; // "/"
        index++;
        const subtype = readToken().toLowerCase();
        if (subtype === '' || (type === '*' && subtype !== '*')) return null;

        let quality = 1;
        let sawQuality = false;
        while (true) {
            skipWhitespace();
            if (index >= length || header.charCodeAt(index) !== 0x3b) break; // ";"
            index++;
            skipWhitespace();
            if (index >= length) break;
            const next = header.charCodeAt(index);
            if (next === 0x3b || next === 0x2c) continue; // an empty parameter
            const name = readToken().toLowerCase();
            if (name === '') return null;
            skipWhitespace();
            if (header.charCodeAt(index) !== 0x3d) return null; // "="
            index++;
            skipWhitespace();
            const quoted = header.charCodeAt(index) === 0x22;
            const value = quoted ? readQuotedString() : readToken();
            if (value === null || value === '') return null;
            if (name === 'q') {
                const parsed = quoted || sawQuality ? null : parseQuality(value);
                if (parsed === null) return null;
                quality = parsed;
                sawQuality = true;
            }
        }
        skipWhitespace();
        if (index < length && header.charCodeAt(index) !== 0x2c) return null;
        elements.push({ type, subtype, quality });
    }
    return elements;
}

function qualityOf(elements, format) {
    let quality = -1;
    for (let index = 0; index < elements.length; index++) {
        const element = elements[index];
        if (element === undefined || element.type !== 'image' || element.subtype !== format) continue;
        if (quality === -1 || element.quality < quality) quality = element.quality;
    }
    return quality === -1 ? 0 : quality;
}

function negotiateFormat(accept, offered) {
    if (accept === undefined || offered.length === 0) return null;
    const elements = parseAccept(accept);
    if (elements === null) return null;
    let chosen = null;
    let chosenQuality = 0;
    for (let index = 0; index < offered.length; index++) {
        const format = offered[index];
        if (format === undefined) continue;
        const quality = qualityOf(elements, format);
        if (quality > chosenQuality) {
            chosen = format;
            chosenQuality = quality;
        }
    }
    return chosen;
}

function formatClassOf(accept, offered) {
    const chosen = negotiateFormat(accept, offered);
    return chosen === null ? 'source' : chosen;
}

/*
 * The class of `accept` (a header value, or undefined when absent) under the generated
 * config: from the table of known headers when it is one of them, else parsed. The
 * table's entries are `\n{accept}\r{class}`, shortest first; a header holds neither CR
 * nor LF, so an occurrence between LF and CR is a whole entry, and a known header's
 * first occurrence is its own entry (only a longer entry could hold it). A header naming
 * none of the offered formats is `source` without parsing: only an element naming one
 * exactly can choose it. No string is built before the search: in njs a concatenation
 * costs more than the search itself.
 */
function acceptClass(accept) {
    if (accept === undefined) return 'source';
    var table = config.acceptClasses;
    var found = table.indexOf(accept);
    var end = found + accept.length;
    if (found > 0 && table.charCodeAt(found - 1) === 10 && table.charCodeAt(end) === 13) {
        return table.substring(end + 1, table.indexOf('\n', end));
    }
    var offered = config.formats.split(',');
    var lower = accept.toLowerCase();
    for (var index = 0; index < offered.length; index++) {
        if (lower.indexOf(offered[index]) >= 0) return formatClassOf(accept, offered);
    }
    return 'source';
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
    var nowSeconds = Math.floor(Date.now() / 1000);
    var result = verifyLink(r.variables.request_uri, nowSeconds, config);
    if (result.charCodeAt(0) === 47) return result;
    return result === 'bad_signature' ? result : '';
}

/*
 * js_set handler of $imageproxy_format_class, rendered only when formats are offered:
 * the class of a thumbnail link's client (`avif`, `webp` or `source`), '' for any other
 * request. A thumbnail's stem is the only one with a dot (`{key}.{label}`: bucket names
 * and keys have none), so full-size and /proxy links are never negotiated. It reads the
 * stem nginx already has for this request, so the link is checked once.
 */
function formatClass(r) {
    if (config.formats === '') return '';
    var stem = r.variables.imageproxy_stem;
    if (stem.charCodeAt(0) !== 47 || stem.indexOf('.') < 0) return '';
    return acceptClass(r.headersIn.Accept);
}

/*
 * js_header_filter of the error locations (server/deploy/nginxConfig.ts). It runs before
 * nginx's add_header, and deletes what an earlier pass of the same request left: the
 * app's Cache-Control for the image, copied on X-Accel-Redirect before nginx opened the
 * file (then unreadable or gone), or the file headers of a hit whose Range turned out
 * unsatisfiable. The error location's add_header lines are then the only ones.
 */
function clearFileHeaders(r) {
    var names = config.fileHeaderNames.split('|');
    for (var index = 0; index < names.length; index++) {
        delete r.headersOut[names[index]];
    }
}

export default {
    linkStem: linkStem,
    clearFileHeaders: clearFileHeaders,
    formatClass: formatClass,
    acceptClass: acceptClass,
    formatClassOf: formatClassOf,
    verifyLink: verifyLink,
    weekSuffixes: weekSuffixes,
    sizeLabel: sizeLabel
};
