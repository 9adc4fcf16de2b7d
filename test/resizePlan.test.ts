import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { orientedSize, planResize, type PixelSize, type ResizeBox } from '../server/images/resizePlan.js';

interface PlanCase {
  name: string;
  source: [width: number, height: number];
  /** [maxHeight, maxWidth], the order of a `{h}x{w}` link. */
  box: [maxHeight: number | null, maxWidth: number | null];
  /** EXIF orientation of the stored pixels (undefined: no tag). */
  orientation?: number;
  expected: [width: number, height: number] | 'unchanged';
}

const cases: PlanCase[] = [
  // landscape 1600×1200 (4:3)
  { name: 'landscape, height limit', source: [1600, 1200], box: [150, null], expected: [200, 150] },
  { name: 'landscape, width limit', source: [1600, 1200], box: [null, 200], expected: [200, 150] },
  { name: 'landscape, square box: width limits', source: [1600, 1200], box: [250, 250], expected: [250, 188] },
  { name: 'landscape, 500 box', source: [1600, 1200], box: [500, 500], expected: [500, 375] },
  { name: 'landscape, tall box: width limits', source: [1600, 1200], box: [1000, 100], expected: [100, 75] },
  { name: 'landscape, wide box: height limits', source: [1600, 1200], box: [60, 1000], expected: [80, 60] },
  // portrait 600×900 (2:3)
  { name: 'portrait, height limit', source: [600, 900], box: [150, null], expected: [100, 150] },
  { name: 'portrait, width limit', source: [600, 900], box: [null, 200], expected: [200, 300] },
  { name: 'portrait, square box: height limits', source: [600, 900], box: [250, 250], expected: [167, 250] },
  { name: 'portrait, 500 box', source: [600, 900], box: [500, 500], expected: [333, 500] },
  // square
  { name: 'square, square box', source: [1000, 1000], box: [250, 250], expected: [250, 250] },
  { name: 'square, non-square box', source: [1000, 1000], box: [300, 120], expected: [120, 120] },
  { name: 'square, height only', source: [1000, 1000], box: [150, null], expected: [150, 150] },
  // never enlarge
  { name: 'small, box larger on both sides', source: [100, 80], box: [250, 250], expected: 'unchanged' },
  { name: 'small, height only larger', source: [100, 80], box: [150, null], expected: 'unchanged' },
  { name: 'small, width only larger', source: [100, 80], box: [null, 200], expected: 'unchanged' },
  { name: 'exactly the box size', source: [250, 188], box: [188, 250], expected: 'unchanged' },
  { name: 'one side fits, the other shrinks', source: [300, 100], box: [200, 150], expected: [150, 50] },
  { name: 'both sides null', source: [4000, 3000], box: [null, null], expected: 'unchanged' },
  // rounding: to nearest, halves up, at least 1 px
  { name: 'rounds down below .5', source: [1000, 333], box: [null, 100], expected: [100, 33] },
  { name: 'rounds up from .5', source: [1000, 335], box: [null, 100], expected: [100, 34] },
  { name: 'odd sizes', source: [1023, 767], box: [150, null], expected: [200, 150] },
  { name: '1 px source side stays 1', source: [5000, 1], box: [100, 100], expected: [100, 1] },
  // extreme aspect ratios
  { name: 'panorama strip: rounds to 0, clamped to 1', source: [20000, 30], box: [100, 100], expected: [100, 1] },
  { name: 'tall strip, width only', source: [40, 30000], box: [null, 200], expected: 'unchanged' },
  { name: 'tall strip, height limits', source: [40, 30000], box: [150, null], expected: [1, 150] },
  { name: 'wide banner, height limits', source: [3000, 200], box: [150, null], expected: [2250, 150] },
  { name: 'wide banner, square box', source: [3000, 200], box: [250, 250], expected: [250, 17] },
  // EXIF orientation: stored landscape, shown portrait (5-8 swap, 1-4 keep)
  { name: 'orientation 6: upright portrait', source: [1600, 1200], orientation: 6, box: [250, 250], expected: [188, 250] },
  { name: 'orientation 8: upright portrait', source: [1600, 1200], orientation: 8, box: [150, null], expected: [113, 150] },
  { name: 'orientation 5: transposed', source: [1600, 1200], orientation: 5, box: [null, 200], expected: [200, 267] },
  { name: 'orientation 7: transverse', source: [900, 600], orientation: 7, box: [500, 500], expected: [333, 500] },
  { name: 'orientation 3: upside down, no swap', source: [1600, 1200], orientation: 3, box: [250, 250], expected: [250, 188] },
  { name: 'orientation 1: no swap', source: [600, 900], orientation: 1, box: [250, 250], expected: [167, 250] },
  { name: 'no orientation tag', source: [600, 900], box: [250, 250], expected: [167, 250] },
  { name: 'orientation 6, small: unchanged but swapped', source: [100, 80], orientation: 6, box: [250, 250], expected: 'unchanged' },
];

describe('planResize', () => {
  for (const testCase of cases) {
    it(testCase.name, () => {
      const [width, height] = testCase.source;
      const [maxHeight, maxWidth] = testCase.box;
      const upright = orientedSize({ width, height }, testCase.orientation);
      const box: ResizeBox = { maxHeight, maxWidth };
      const plan = planResize(upright, box);
      if (testCase.expected === 'unchanged') {
        assert.deepEqual(plan, { width: upright.width, height: upright.height, resize: false });
      } else {
        const [expectedWidth, expectedHeight] = testCase.expected;
        assert.deepEqual(plan, { width: expectedWidth, height: expectedHeight, resize: true });
        assert.ok(maxWidth === null || plan.width <= maxWidth, 'fits the width');
        assert.ok(maxHeight === null || plan.height <= maxHeight, 'fits the height');
      }
    });
  }

  it('keeps the aspect ratio to within rounding', () => {
    const sizes: PixelSize[] = [
      { width: 1600, height: 1200 },
      { width: 601, height: 907 },
      { width: 4032, height: 3024 },
      { width: 333, height: 2999 },
    ];
    for (const source of sizes) {
      for (const edge of [37, 150, 200, 250, 500]) {
        const plan = planResize(source, { maxHeight: edge, maxWidth: edge });
        const exactHeight = (plan.width * source.height) / source.width;
        const exactWidth = (plan.height * source.width) / source.height;
        assert.ok(Math.abs(plan.height - exactHeight) <= 1 || Math.abs(plan.width - exactWidth) <= 1, JSON.stringify({ source, edge, plan }));
      }
    }
  });

  it('refuses sizes that are not positive integers', () => {
    assert.throws(() => planResize({ width: 0, height: 10 }, { maxHeight: 5, maxWidth: null }), RangeError);
    assert.throws(() => planResize({ width: 10, height: 1.5 }, { maxHeight: 5, maxWidth: null }), RangeError);
    assert.throws(() => planResize({ width: 10, height: 10 }, { maxHeight: 0, maxWidth: null }), RangeError);
    assert.throws(() => planResize({ width: 10, height: 10 }, { maxHeight: null, maxWidth: Number.NaN }), RangeError);
  });
});

describe('orientedSize', () => {
  const stored = { width: 40, height: 30 };
  const table: Array<[orientation: number | undefined, expected: PixelSize]> = [
    [undefined, { width: 40, height: 30 }],
    [1, { width: 40, height: 30 }],
    [2, { width: 40, height: 30 }],
    [3, { width: 40, height: 30 }],
    [4, { width: 40, height: 30 }],
    [5, { width: 30, height: 40 }],
    [6, { width: 30, height: 40 }],
    [7, { width: 30, height: 40 }],
    [8, { width: 30, height: 40 }],
    [9, { width: 40, height: 30 }],
  ];
  for (const [orientation, expected] of table) {
    it(`orientation ${orientation ?? 'missing'}`, () => assert.deepEqual(orientedSize(stored, orientation), expected));
  }
});
