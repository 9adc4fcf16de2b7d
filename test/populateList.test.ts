// The list lines of `imageproxy populate` (server/ops/populateList.ts): what each kind of line
// becomes, and the --sizes labels. Nothing here connects anywhere.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { storageKey } from '../server/contract/layout.js';
import { encodeImageUrl } from '../server/contract/link.js';
import { parseFormatList, parsePopulateLine, parseSizeList, targetSizes, type PopulateLineRules } from '../server/ops/populateList.js';
import { parseSize } from '../server/contract/sizes.js';
import { signedPath } from './helpers.js';

const ALLOWED = [150, 200, 250, 500];
const box = (label: string) => {
  const size = parseSize(label, ALLOWED);
  assert.ok(size.kind === 'box');
  return size;
};
const RULES: PopulateLineRules = {
  link: { buckets: new Set(['i', 'f']), sizes: ALLOWED },
  bucket: 'i',
  sizes: [box('150x')],
};
const AT_MS = Date.UTC(2025, 0, 15);
const link = (imageUrl: string, extra: { bucket?: string; size?: string; proxy?: boolean } = {}): string =>
  signedPath({ secret: 'any', imageUrl, atMs: AT_MS, ...extra });

interface TargetCase {
  name: string;
  line: string;
  text: string;
  bucket: string;
  imageUrl: string;
  host: string;
  sizes: string[];
}

const TARGETS: TargetCase[] = [
  {
    name: 'a plain URL goes to --bucket with --sizes',
    line: 'https://img.example.org/a.jpg',
    text: 'https://img.example.org/a.jpg',
    bucket: 'i',
    imageUrl: 'https://img.example.org/a.jpg',
    host: 'img.example.org',
    sizes: ['150x'],
  },
  {
    name: 'surrounding blanks are trimmed',
    line: '  \thttp://127.0.0.1:8000/b.png \r',
    text: 'http://127.0.0.1:8000/b.png',
    bucket: 'i',
    imageUrl: 'http://127.0.0.1:8000/b.png',
    host: '127.0.0.1',
    sizes: ['150x'],
  },
  {
    name: 'a URL with a deep path is an image URL, not a link',
    line: 'https://cdn.example.org/i/full/abcdefghijklmnop/c.jpg',
    text: 'https://cdn.example.org/i/full/abcdefghijklmnop/c.jpg',
    bucket: 'i',
    imageUrl: 'https://cdn.example.org/i/full/abcdefghijklmnop/c.jpg',
    host: 'cdn.example.org',
    sizes: ['150x'],
  },
  {
    name: 'a link path: its bucket and its size besides --sizes',
    line: link('https://img.example.org/d.jpg', { bucket: 'f', size: '250x250' }),
    text: link('https://img.example.org/d.jpg', { bucket: 'f', size: '250x250' }),
    bucket: 'f',
    imageUrl: 'https://img.example.org/d.jpg',
    host: 'img.example.org',
    sizes: ['250x250', '150x'],
  },
  {
    name: 'a whole link URL with a query string; its size already among --sizes counts once',
    line: `https://images.site.example${link('https://img.example.org/e.jpg', { size: '150x' })}?x=1`,
    text: `https://images.site.example${link('https://img.example.org/e.jpg', { size: '150x' })}?x=1`,
    bucket: 'i',
    imageUrl: 'https://img.example.org/e.jpg',
    host: 'img.example.org',
    sizes: ['150x'],
  },
  {
    name: 'a /proxy link stores the image at full size',
    line: link('https://img.example.org/f.gif', { proxy: true }),
    text: link('https://img.example.org/f.gif', { proxy: true }),
    bucket: 'i',
    imageUrl: 'https://img.example.org/f.gif',
    host: 'img.example.org',
    sizes: ['150x'],
  },
];

describe('parsePopulateLine: targets', () => {
  for (const testCase of TARGETS) {
    it(testCase.name, () => {
      const parsed = parsePopulateLine(testCase.line, RULES);
      assert.equal(parsed.kind, 'target');
      assert.ok(parsed.kind === 'target');
      const { target } = parsed;
      assert.equal(target.text, testCase.text);
      assert.equal(target.bucket, testCase.bucket);
      assert.equal(target.imageUrl.href, testCase.imageUrl);
      assert.equal(target.host, testCase.host);
      assert.equal(target.extUrl, encodeImageUrl(testCase.imageUrl));
      // The key a link to the same URL has: the server finds what populate stored.
      assert.equal(target.key, storageKey(Buffer.from(testCase.imageUrl, 'utf8')));
      assert.deepEqual(
        target.sizes.map((size) => size.label),
        testCase.sizes,
      );
      assert.deepEqual(
        targetSizes(target).map((size) => (size.kind === 'box' ? size.label : 'full')),
        ['full', ...testCase.sizes],
      );
    });
  }
});

const OTHERS: { name: string; line: string; expected: ReturnType<typeof parsePopulateLine> }[] = [
  { name: 'blank', line: '', expected: { kind: 'skip' } },
  { name: 'only blanks', line: ' \t ', expected: { kind: 'skip' } },
  { name: 'comment', line: '# https://img.example.org/a.jpg', expected: { kind: 'skip' } },
  { name: 'indented comment', line: '   # note', expected: { kind: 'skip' } },
  { name: 'not a URL', line: 'hello world', expected: { kind: 'invalid', text: 'hello world', code: 'bad_url' } },
  { name: 'not http(s)', line: 'ftp://img.example.org/a.jpg', expected: { kind: 'invalid', text: 'ftp://img.example.org/a.jpg', code: 'bad_url' } },
  {
    name: 'credentials',
    line: 'https://user:pw@img.example.org/a.jpg',
    expected: { kind: 'invalid', text: 'https://user:pw@img.example.org/a.jpg', code: 'bad_url' },
  },
  {
    name: 'a link path of an unknown bucket',
    line: '/zz/full/abcdefghijklmnop/aHR0cHM6Ly9pbWcuZXhhbXBsZS5vcmcvYS5qcGc',
    expected: { kind: 'invalid', text: '/zz/full/abcdefghijklmnop/aHR0cHM6Ly9pbWcuZXhhbXBsZS5vcmcvYS5qcGc', code: 'unknown_bucket' },
  },
  {
    name: 'a link path with no allowed size',
    line: '/i/999x/abcdefghijklmnop/aHR0cHM6Ly9pbWcuZXhhbXBsZS5vcmcvYS5qcGc',
    expected: { kind: 'invalid', text: '/i/999x/abcdefghijklmnop/aHR0cHM6Ly9pbWcuZXhhbXBsZS5vcmcvYS5qcGc', code: 'bad_size' },
  },
  {
    name: 'a link path whose image URL is not http(s)',
    line: `/i/full/abcdefghijklmnop/${encodeImageUrl('file:///etc/passwd')}`,
    expected: { kind: 'invalid', text: `/i/full/abcdefghijklmnop/${encodeImageUrl('file:///etc/passwd')}`, code: 'bad_url' },
  },
  { name: 'a path of the wrong shape', line: '/i/full', expected: { kind: 'invalid', text: '/i/full', code: 'bad_path' } },
];

describe('parsePopulateLine: skipped and invalid lines', () => {
  for (const testCase of OTHERS) {
    it(testCase.name, () => {
      assert.deepEqual(parsePopulateLine(testCase.line, RULES), testCase.expected);
    });
  }
});

describe('parseSizeList', () => {
  const cases: { text: string; labels: string[] | null }[] = [
    { text: '150x', labels: ['150x'] },
    { text: '150x,x200,250x250', labels: ['150x', 'x200', '250x250'] },
    { text: '150x, 150x', labels: ['150x'] },
    { text: '150x999', labels: null },
    { text: '999x', labels: null },
    { text: 'full', labels: null },
    { text: '150', labels: null },
    { text: '', labels: null },
    { text: '150x,', labels: null },
  ];
  for (const { text, labels } of cases) {
    it(`${JSON.stringify(text)} → ${labels === null ? 'refused' : labels.join(',')}`, () => {
      if (labels === null) {
        assert.throws(() => parseSizeList(text, ALLOWED), RangeError);
      } else {
        assert.deepEqual(
          parseSizeList(text, ALLOWED).map((size) => size.label),
          labels,
        );
      }
    });
  }
});

describe('parseFormatList', () => {
  const cases: { text: string; formats: string[] | null }[] = [
    { text: 'avif', formats: ['avif'] },
    { text: 'avif,webp', formats: ['avif', 'webp'] },
    { text: ' WebP , avif ', formats: ['webp', 'avif'] },
    { text: 'webp,webp', formats: ['webp'] },
    { text: 'jpg', formats: null },
    { text: '', formats: null },
    { text: 'avif,', formats: null },
  ];
  for (const { text, formats } of cases) {
    it(JSON.stringify(text), () => {
      if (formats === null) assert.throws(() => parseFormatList(text), RangeError);
      else assert.deepEqual(parseFormatList(text), formats);
    });
  }
});
