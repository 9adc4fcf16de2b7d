/**
 * The answer to a request Node's HTTP parser refuses before any route sees it (bytes that
 * are not HTTP, a path without a leading `/`, raw bytes ≥ 0x80, headers past the size
 * limit, a request that never finished): the project's text answer with its headers,
 * instead of Node's bare status line. Pure: returns the bytes to write.
 */
import { ERROR_STATUS, type ErrorCode } from '../errors.js';
import { SECURITY_HEADERS, errorText, errorTextHeaders } from './responseHeaders.js';

const ANSWERS: Readonly<Record<string, { code: ErrorCode; message: string; reason: string }>> = {
  HPE_HEADER_OVERFLOW: { code: 'headers_too_large', message: 'request line or headers too large', reason: 'Request Header Fields Too Large' },
  ERR_HTTP_REQUEST_TIMEOUT: { code: 'request_timeout', message: 'request not received in time', reason: 'Request Timeout' },
};
const MALFORMED = { code: 'bad_request' as const, message: 'malformed request', reason: 'Bad Request' };

/**
 * The raw HTTP/1.1 answer for a parser error code (`error.code` of the clientError event);
 * without the body when the request was a HEAD (its headers still say how long it is).
 */
export function clientErrorAnswer(parserCode: string | undefined, head: boolean): string {
  const { code, message, reason } = (parserCode === undefined ? undefined : ANSWERS[parserCode]) ?? MALFORMED;
  const body = errorText(code, message);
  const headers = {
    ...errorTextHeaders(code),
    'Content-Length': String(Buffer.byteLength(body)),
    ...SECURITY_HEADERS,
    Connection: 'close',
  };
  const lines = Object.entries(headers).map(([name, value]) => `${name}: ${value}\r\n`).join('');
  return `HTTP/1.1 ${ERROR_STATUS[code]} ${reason}\r\n${lines}\r\n${head ? '' : body}`;
}

/** Whether the raw bytes of a refused request (the parser error's `rawPacket`) begin a HEAD. */
export function isHeadRequest(rawPacket: unknown): boolean {
  return Buffer.isBuffer(rawPacket) && rawPacket.subarray(0, 5).toString('latin1') === 'HEAD ';
}
