/**
 * server/http/placeholder.ts (which requests get the placeholder, in which format, the
 * error answer) and the Accept patterns server/deploy/placeholderNginx.ts renders for
 * nginx, checked against that decision.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import sharp from 'sharp';
import { CONTENT_TYPE_BY_EXTENSION, ERROR_CACHE_CONTROL } from '../server/http/responseHeaders.js';
import {
  PLACEHOLDER_FORMATS,
  PLACEHOLDER_IMAGES,
  errorAnswer,
  placeholderFormatOf,
  type PlaceholderFormat,
} from '../server/http/placeholder.js';
import { BROWSER_IMAGE_ACCEPTS, placeholderAcceptPatterns } from '../server/deploy/placeholderNginx.js';
import { MAX_ACCEPT_ELEMENTS, MAX_ACCEPT_LENGTH } from '../server/contract/accept.js';
import { seededRandom } from './seededRandom.js';

const CHROME_IMAGE = 'image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8';
const CHROME_NAVIGATION =
  'text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7';

const cases: Array<[name: string, accept: string | undefined, expected: PlaceholderFormat | null]> = [
  // browsers' <img>
  ['Chrome <img>', CHROME_IMAGE, 'png'],
  ['Firefox 92-127 <img>', 'image/avif,image/webp,*/*', 'png'],
  ['Firefox 128 <img>', 'image/avif,image/webp,image/png,image/svg+xml,image/*;q=0.8,*/*;q=0.5', 'png'],
  ['Firefox 65-91 <img>', 'image/webp,*/*', 'png'],
  ['Safari 16 <img>', 'image/webp,image/avif,video/*;q=0.8,image/png,image/svg+xml,image/*;q=0.8,*/*;q=0.5', 'png'],
  ['Safari 13 <img>', 'image/png,image/svg+xml,image/*;q=0.8,video/*;q=0.8,*/*;q=0.5', 'png'],
  ['old Edge <img>', 'image/png, image/svg+xml, image/*; q=0.8, */*; q=0.5', 'png'],
  ['image/* alone', 'image/*', 'png'],
  // navigations and tools: the text
  ['Chrome navigation', CHROME_NAVIGATION, null],
  ['Firefox navigation', 'text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8', null],
  ['Safari navigation', 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8', null],
  ['curl', '*/*', null],
  ['no Accept', undefined, null],
  ['empty Accept', '', null],
  ['json client', 'application/json', null],
  ['text/html listed last', 'image/png,text/html;q=0.1', null],
  ['TEXT/HTML in capitals', 'image/png,TEXT/HTML', null],
  // q=0 excludes
  ['text/html;q=0 is not listed', 'image/png,text/html;q=0', 'png'],
  ['image/png;q=0 with image/*', 'image/*,image/png;q=0', 'gif'],
  ['image/*;q=0 with */*: no image type listed', 'image/*;q=0,*/*', null],
  ['every image type q=0', 'image/png;q=0,image/gif;q=0', null],
  ['png excluded by its lowest q', 'image/png,image/png;q=0,image/gif', 'gif'],
  // the most specific range weighs the format
  ['image/webp alone', 'image/webp', 'webp'],
  ['image/avif alone', 'image/avif', 'avif'],
  ['image/jpeg alone', 'image/jpeg', 'jpg'],
  ['image/gif alone', 'image/gif', 'gif'],
  ['png at a low q still acceptable', 'image/webp,image/png;q=0.1', 'png'],
  ['image/heic alone: no format we have', 'image/heic', null],
  ['an image type with */* for the rest', 'image/heic,*/*;q=0.5', 'png'],
  ['*/*;q=0 leaves image/heic alone', 'image/heic,*/*;q=0', null],
  // malformed: the text
  ['missing subtype', 'image/,image/png', null],
  ['bad q', 'image/png;q=2', null],
  ['two q', 'image/png;q=0.5;q=0.6', null],
  ['garbage', '\u0000\u0001garbage', null],
  ['too long', `image/png,${'x/y,'.repeat(MAX_ACCEPT_LENGTH / 4)}`, null],
  ['too many elements', Array.from({ length: MAX_ACCEPT_ELEMENTS + 1 }, () => 'image/png').join(','), null],
  // tolerated by the parser
  ['parameters and whitespace', ' Image/PNG ; charset="x" ; Q=0.5 ,\t', 'png'],
];

describe('placeholderFormatOf', () => {
  for (const [name, accept, expected] of cases) {
    it(name, () => assert.equal(placeholderFormatOf(accept), expected));
  }
});

describe('the placeholder images', () => {
  for (const format of PLACEHOLDER_FORMATS) {
    it(`${format}: one light grey pixel that sharp decodes as ${format}`, async () => {
      const image = PLACEHOLDER_IMAGES[format];
      assert.equal(image.contentType, CONTENT_TYPE_BY_EXTENSION[format]);
      assert.ok(image.bytes.length < 400, `${image.bytes.length} bytes`);
      const metadata = await sharp(image.bytes).metadata();
      assert.equal(metadata.format, format === 'jpg' ? 'jpeg' : format === 'avif' ? 'heif' : format);
      const { data, info } = await sharp(image.bytes).removeAlpha().raw().toBuffer({ resolveWithObject: true });
      assert.deepEqual([info.width, info.height], [1, 1]);
      for (const channel of data) assert.ok(Math.abs(channel - 224) <= 2, `channel ${channel}`);
    });
  }
});

describe('errorAnswer', () => {
  it('is the text, without Vary, when the option is off, whatever Accept says', () => {
    const answer = errorAnswer('bad_signature', 'invalid or expired signature', CHROME_IMAGE, false);
    assert.deepEqual(answer, {
      headers: { 'Content-Type': 'text/plain; charset=utf-8', 'Cache-Control': ERROR_CACHE_CONTROL, 'X-Imageproxy-Error': 'bad_signature' },
      body: 'bad_signature: invalid or expired signature\n',
    });
  });

  it('is the text with Vary: Accept for a navigation when the option is on', () => {
    const answer = errorAnswer('not_stored', 'image is not stored', CHROME_NAVIGATION, true);
    assert.equal(answer.body, 'not_stored: image is not stored\n');
    assert.equal(answer.headers.Vary, 'Accept');
    assert.equal(answer.headers['X-Imageproxy-Error'], 'not_stored');
  });

  it('is the image with the error headers for an image load when the option is on', () => {
    const answer = errorAnswer('origin_status', 'origin answered 500', 'image/webp', true);
    const image = PLACEHOLDER_IMAGES.webp;
    assert.ok(Buffer.isBuffer(answer.body));
    assert.equal(Buffer.compare(answer.body, image.bytes), 0);
    assert.deepEqual(answer.headers, {
      'Content-Type': 'image/webp',
      'Content-Length': String(image.bytes.length),
      'Cache-Control': ERROR_CACHE_CONTROL,
      'X-Imageproxy-Error': 'origin_status',
      Vary: 'Accept',
    });
  });
});

/** What nginx's map gives a header: the first pattern that matches (map's order), else the text. */
function patternFormatOf(accept: string): PlaceholderFormat | null {
  for (const { pattern, format } of placeholderAcceptPatterns()) {
    if (new RegExp(pattern, 'i').test(accept)) return format;
  }
  return null;
}

describe("nginx's Accept patterns", () => {
  it('give every browser <img> header listed for the map the decision itself', () => {
    for (const accept of BROWSER_IMAGE_ACCEPTS) {
      assert.notEqual(placeholderFormatOf(accept), null, accept);
      assert.equal(patternFormatOf(accept), placeholderFormatOf(accept), accept);
    }
  });

  it('give the decision or the text on every case of the table, never another image', () => {
    for (const [name, accept] of cases) {
      if (accept === undefined) continue;
      const fromPatterns = patternFormatOf(accept);
      if (fromPatterns !== null) assert.equal(fromPatterns, placeholderFormatOf(accept), name);
    }
  });

  it('agree with the decision on generated headers, or answer text', () => {
    const random = seededRandom(20_06);
    const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)] as T;
    const ranges = ['image/png', 'image/gif', 'image/webp', 'image/avif', 'image/jpeg', 'image/heic', 'image/*', '*/*', 'text/html', 'text/*', 'video/*', 'application/xml', 'IMAGE/PNG', '*/png', 'image/'];
    const qualities = ['', ';q=0', ';q=0.0', ';q=0.000', ';q=0.5', ';q=0.001', ';q=1', ';q=1.0', ';q=0.8', ' ; q=0.8', ';q=1.5', ';level=1', ';q=.5'];
    const separators = [',', ', ', ' ,', ',\t', ',,'];
    let imageAnswers = 0;
    for (let index = 0; index < 20_000; index++) {
      const count = 1 + Math.floor(random() * 6);
      let accept = '';
      for (let element = 0; element < count; element++) {
        accept += (element === 0 ? '' : pick(separators)) + pick(ranges) + pick(qualities);
      }
      const decided = placeholderFormatOf(accept);
      const fromPatterns = patternFormatOf(accept);
      if (fromPatterns !== null) {
        imageAnswers += 1;
        assert.equal(fromPatterns, decided, accept);
      }
    }
    // The patterns are not so strict that they never say yes.
    assert.ok(imageAnswers > 1000, `${imageAnswers} image answers`);
  });

  it('refuse headers past the parser’s bounds', () => {
    assert.equal(patternFormatOf(Array.from({ length: MAX_ACCEPT_ELEMENTS + 1 }, () => 'image/png').join(',')), null);
    assert.equal(patternFormatOf(`image/png,${'a/b,'.repeat(MAX_ACCEPT_LENGTH / 4)}`), null);
    // At both bounds at once: as many elements as allowed, within the length.
    const fullList = ['image/png', ...Array.from({ length: MAX_ACCEPT_ELEMENTS - 1 }, () => 'a/b')].join(',');
    assert.ok(fullList.length <= MAX_ACCEPT_LENGTH);
    assert.equal(patternFormatOf(fullList), 'png');
  });
});
