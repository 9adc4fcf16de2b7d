/*
 * AWS Signature Version 4 for nginx (njs 0.7.9): signs the GET nginx sends to an S3
 * gateway for one object, so the bucket can stay private (visitors never reach it, and
 * nothing bypasses the link check in front of it).
 *
 * The signed request: `GET {uri}` with no query, headers `host`, `x-amz-content-sha256:
 * UNSIGNED-PAYLOAD` (a GET has no body to hash) and `x-amz-date`, as AWS documents
 * SigV4 for S3 (the path is encoded once, segment by segment, `/` kept). Other headers
 * nginx passes (Range, If-None-Match) are not signed and need not be.
 *
 * In nginx: the location sets the inputs as variables, the js_set variables below
 * compute the rest, and the proxy sends them:
 *
 *   set $s3_object_path        /{s3 bucket}/{prefix}{name};   # path-style, unencoded
 *   set $s3_host               gateway.example:7480;          # the Host header sent
 *   set $s3_region             us-east-1;
 *   set $s3_access_key_id      …;
 *   set $s3_secret_access_key  …;
 *   set $s3_signing_time       $msec;                         # fixed once per request
 *   js_set $s3_object_uri      s3sign.objectUri;
 *   js_set $s3_amz_date        s3sign.amzDate;
 *   js_set $s3_authorization   s3sign.authorization;
 *   proxy_set_header Host                 $s3_host;
 *   proxy_set_header x-amz-date           $s3_amz_date;
 *   proxy_set_header x-amz-content-sha256 UNSIGNED-PAYLOAD;
 *   proxy_set_header Authorization        $s3_authorization;
 *   proxy_pass http://gateway$s3_object_uri;
 *
 * js_set variables are computed again each time they are read; `$s3_signing_time` is a
 * plain `set` variable, so the date header and the signature always name the same
 * second. An optional `$s3_session_token` (temporary credentials) is signed as
 * `x-amz-security-token` when not empty; send it with that header.
 *
 * Tested against the AWS SDK's own signer (test/s3sign.test.ts) and a real Ceph gateway
 * behind a real nginx (test/s3signNginx.test.ts). Written for njs 0.7.9: no for...of.
 */
var crypto = require('crypto');

var UNSIGNED_PAYLOAD = 'UNSIGNED-PAYLOAD';
var SERVICE = 's3';

/* RFC 3986: everything but A-Z a-z 0-9 - . _ ~ percent-encoded; encodeURIComponent leaves five more. */
var STILL_RESERVED = /[!'()*]/g;

function percentOf(character) {
    return '%' + character.charCodeAt(0).toString(16).toUpperCase();
}

function encodeSegment(segment) {
    return encodeURIComponent(segment).replace(STILL_RESERVED, percentOf);
}

/* The canonical (and sent) URI of an unencoded path: each segment encoded, `/` kept. */
function canonicalUri(path) {
    var segments = path.split('/');
    for (var i = 0; i < segments.length; i++) {
        segments[i] = encodeSegment(segments[i]);
    }
    return segments.join('/');
}

/* `YYYYMMDDTHHMMSSZ` of an instant in milliseconds. */
function amzDateOf(epochMs) {
    var iso = new Date(epochMs).toISOString();
    return iso.slice(0, 4) + iso.slice(5, 7) + iso.slice(8, 10) + 'T' + iso.slice(11, 13) + iso.slice(14, 16) + iso.slice(17, 19) + 'Z';
}

function hmac(key, text) {
    return crypto.createHmac('sha256', key).update(text).digest();
}

/*
 * The Authorization header of a GET: request = { host, uri (encoded, from canonicalUri),
 * amzDate, region, accessKeyId, secretAccessKey, sessionToken (optional) }.
 */
function authorizationForGet(request) {
    var day = request.amzDate.slice(0, 8);
    var scope = day + '/' + request.region + '/' + SERVICE + '/aws4_request';
    var token = request.sessionToken ? request.sessionToken : '';
    var signedHeaders = token === '' ? 'host;x-amz-content-sha256;x-amz-date' : 'host;x-amz-content-sha256;x-amz-date;x-amz-security-token';
    var canonicalRequest = 'GET\n' + request.uri + '\n\n' +
        'host:' + request.host + '\n' +
        'x-amz-content-sha256:' + UNSIGNED_PAYLOAD + '\n' +
        'x-amz-date:' + request.amzDate + '\n' +
        (token === '' ? '' : 'x-amz-security-token:' + token + '\n') +
        '\n' + signedHeaders + '\n' + UNSIGNED_PAYLOAD;
    var stringToSign = 'AWS4-HMAC-SHA256\n' + request.amzDate + '\n' + scope + '\n' +
        crypto.createHash('sha256').update(canonicalRequest).digest('hex');
    var signingKey = hmac(hmac(hmac(hmac('AWS4' + request.secretAccessKey, day), request.region), SERVICE), 'aws4_request');
    var signature = crypto.createHmac('sha256', signingKey).update(stringToSign).digest('hex');
    return 'AWS4-HMAC-SHA256 Credential=' + request.accessKeyId + '/' + scope +
        ', SignedHeaders=' + signedHeaders + ', Signature=' + signature;
}

/* ---- nginx: js_set handlers over the location's variables ---------------------------------- */

function signingTimeMs(r) {
    return Math.floor(Number(r.variables.s3_signing_time)) * 1000;
}

function objectUri(r) {
    return canonicalUri(r.variables.s3_object_path);
}

function amzDate(r) {
    return amzDateOf(signingTimeMs(r));
}

function authorization(r) {
    var v = r.variables;
    return authorizationForGet({
        host: v.s3_host,
        uri: canonicalUri(v.s3_object_path),
        amzDate: amzDateOf(signingTimeMs(r)),
        region: v.s3_region,
        accessKeyId: v.s3_access_key_id,
        secretAccessKey: v.s3_secret_access_key,
        sessionToken: v.s3_session_token
    });
}

export default {
    canonicalUri: canonicalUri,
    amzDateOf: amzDateOf,
    authorizationForGet: authorizationForGet,
    objectUri: objectUri,
    amzDate: amzDate,
    authorization: authorization
};
