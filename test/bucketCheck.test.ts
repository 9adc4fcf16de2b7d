// What `check` on a bucket calls damaged (server/stats/bucketCheckWalk.ts objectDamage):
// pure, a table of cases. The walk itself runs against a real gateway in
// test/bucketTakedown.test.ts.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { storageKey } from '../server/contract/layout.js';
import { objectDamage, type ObjectReading } from '../server/stats/bucketCheckWalk.js';
import { originalObjectMetadata, variantObjectMetadata } from '../server/storage/objectMetadata.js';

const key = storageKey(Buffer.from('https://origin.test/a.png'));
const DIGEST = 'a'.repeat(64);
const OTHER = 'b'.repeat(64);
const facts = { sourceUrl: null, contentType: 'image/png', originContentType: null, bytes: 10, width: 4, height: 3, frames: 1, sha256: DIGEST, fetchedAt: '2026-01-02T03:04:05.000Z' };
const original = { bucket: 'i', key, label: null, formatClass: 'source' as const };
const thumbnail = { bucket: 'i', key, label: '150x', formatClass: 'webp' as const };

function reading(overrides: Omit<Partial<ObjectReading>, 'info'> & { info?: Partial<ObjectReading['info']> }): ObjectReading {
  return {
    image: original,
    sniffed: 'png',
    sha256: DIGEST,
    ...overrides,
    info: { bytes: 10, contentType: 'image/png', metadata: originalObjectMetadata(facts), ...overrides.info },
  };
}

const CASES: Array<{ name: string; reading: ObjectReading; damage: RegExp | null }> = [
  { name: 'a sound original', reading: reading({}), damage: null },
  { name: 'a sound original, a type with parameters', reading: reading({ info: { contentType: 'image/png; charset=binary' } }), damage: null },
  { name: 'empty', reading: reading({ info: { bytes: 0 } }), damage: /^empty$/ },
  { name: 'bytes of no image', reading: reading({ sniffed: null }), damage: /no image of ours/ },
  { name: 'bytes of another format than the type', reading: reading({ sniffed: 'jpeg' }), damage: /the bytes are jpeg, the Content-Type says image\/png/ },
  { name: 'bytes other than the metadata says', reading: reading({ sha256: OTHER }), damage: new RegExp(`hash to sha256 ${OTHER}, the metadata says ${DIGEST}`) },
  { name: 'an original without its facts', reading: reading({ info: { metadata: { sha256: DIGEST } } }), damage: /metadata is missing or malformed/ },
  { name: 'an undecodable original', reading: reading({ decodeError: 'VipsJpeg: premature end' }), damage: /does not decode: VipsJpeg/ },
  { name: 'decoded fine', reading: reading({ decodeError: null }), damage: null },
  {
    name: 'a sound class thumbnail',
    reading: reading({ image: thumbnail, sniffed: 'webp', info: { contentType: 'image/webp', metadata: variantObjectMetadata({ bytes: 10, sha256: DIGEST, contentType: 'image/webp' }) } }),
    damage: null,
  },
  { name: 'a thumbnail without its digest', reading: reading({ image: thumbnail, sniffed: 'webp', info: { contentType: 'image/webp', metadata: {} } }), damage: /no sha256 metadata/ },
];

describe('objectDamage', () => {
  for (const { name, reading: read, damage } of CASES) {
    it(name, () => {
      const said = objectDamage(read);
      if (damage === null) assert.equal(said, null);
      else assert.match(said ?? '(sound)', damage);
    });
  }
});
