// The sidecar's facts as object metadata (server/storage/objectMetadata.ts): round trips,
// header-safe values, the 2 KB budget, and malformed metadata read as unknown.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { ImageMetadata } from '../server/tree/originals.js';
import {
  METADATA_BUDGET_BYTES,
  metadataBytes,
  originalFactsOf,
  originalObjectMetadata,
  variantObjectMetadata,
  variantRecordOfObject,
} from '../server/storage/objectMetadata.js';

const SHA = 'a'.repeat(64);

function facts(overrides: Partial<ImageMetadata>): ImageMetadata {
  return {
    sourceUrl: 'https://example.com/a.jpg',
    contentType: 'image/jpeg',
    originContentType: 'image/jpeg',
    bytes: 1234,
    width: 640,
    height: 480,
    frames: 1,
    sha256: SHA,
    fetchedAt: '2026-12-07T14:00:00.000Z',
    ...overrides,
  };
}

const HEADER_SAFE = /^[\x21-\x7e]*$/;

describe('original facts round trip through metadata', () => {
  const table: Array<[what: string, input: ImageMetadata, sourceUrlBack: string | null]> = [
    ['plain', facts({}), 'https://example.com/a.jpg'],
    ['no source URL (rebuilt from the bytes)', facts({ sourceUrl: null }), null],
    ['no origin type', facts({ originContentType: null }), 'https://example.com/a.jpg'],
    ['non-ASCII URL', facts({ sourceUrl: 'https://bücher.example/bild ü.png?q=ä&x=1' }), 'https://bücher.example/bild ü.png?q=ä&x=1'],
    ['URL with CR LF and quotes', facts({ sourceUrl: 'https://e.example/a\r\nX-Evil: 1"\'.gif' }), 'https://e.example/a\r\nX-Evil: 1"\'.gif'],
    ['origin type with parameters', facts({ originContentType: 'image/jpeg; charset="x y"' }), 'https://example.com/a.jpg'],
    ['animated', facts({ frames: 24, contentType: 'image/gif' }), 'https://example.com/a.jpg'],
    ['URL just within the budget', facts({ sourceUrl: `https://e.example/${'a'.repeat(1800)}` }), `https://e.example/${'a'.repeat(1800)}`],
    ['URL past the budget: left out', facts({ sourceUrl: `https://e.example/${'a'.repeat(8000)}` }), null],
    ['URL past the budget once percent-encoded', facts({ sourceUrl: `https://e.example/${'ü'.repeat(400)}` }), null],
    ['URL with a lone surrogate: left out', facts({ sourceUrl: 'https://e.example/\ud800.png' }), null],
  ];
  for (const [what, input, sourceUrlBack] of table) {
    it(what, () => {
      const metadata = originalObjectMetadata(input);
      for (const [name, value] of Object.entries(metadata)) {
        assert.match(name, /^[a-z0-9-]+$/, 'names are lower-case tokens');
        assert.match(value, HEADER_SAFE, `${name} is printable ASCII without spaces`);
      }
      assert.ok(metadataBytes(metadata) <= METADATA_BUDGET_BYTES, 'within the budget');
      const back = originalFactsOf(metadata, { contentType: input.contentType, bytes: input.bytes });
      assert.deepEqual(back, { ...input, sourceUrl: sourceUrlBack });
    });
  }
});

describe('original facts from malformed metadata are unknown', () => {
  const good = originalObjectMetadata(facts({}));
  const table: Array<[what: string, change: Record<string, string | undefined>]> = [
    ['no sha256', { sha256: undefined }],
    ['sha256 upper-case', { sha256: 'A'.repeat(64) }],
    ['sha256 short', { sha256: 'a'.repeat(63) }],
    ['width zero', { width: '0' }],
    ['width negative', { width: '-5' }],
    ['width not a number', { width: '12px' }],
    ['height with a leading zero', { height: '0480' }],
    ['frames missing', { frames: undefined }],
    ['fetched-at not ISO', { 'fetched-at': 'yesterday' }],
    ['fetched-at impossible date', { 'fetched-at': '2026-13-45T99:00:00Z' }],
  ];
  for (const [what, change] of table) {
    it(what, () => {
      const metadata: Record<string, string | undefined> = { ...good, ...change };
      assert.equal(originalFactsOf(metadata, { contentType: 'image/jpeg', bytes: 1 }), null);
    });
  }
  it('a malformed source URL or origin type reads as null, the rest stands', () => {
    const back = originalFactsOf({ ...good, 'source-url': '%E0%A4%A', 'origin-type': '%' }, { contentType: 'image/jpeg', bytes: 1234 });
    assert.deepEqual(back, { ...facts({}), sourceUrl: null, originContentType: null });
  });
});

describe('thumbnail records', () => {
  it('round trip: the digest in metadata, type and size from the object', () => {
    const record = { bytes: 999, sha256: SHA, contentType: 'image/webp' };
    assert.deepEqual(variantRecordOfObject(variantObjectMetadata(record), { contentType: 'image/webp', bytes: 999 }), record);
  });
  it('no or a malformed digest: unknown', () => {
    assert.equal(variantRecordOfObject({}, { contentType: 'image/webp', bytes: 1 }), null);
    assert.equal(variantRecordOfObject({ sha256: 'xyz' }, { contentType: 'image/webp', bytes: 1 }), null);
  });
});
