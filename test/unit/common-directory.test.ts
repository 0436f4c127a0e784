/**
 * The directory a fill's batch is copied within: the deepest one holding every file of it, so
 * rclone lists that directory and none above it.
 */
import fc from 'fast-check';
import { deepestCommonDirectory } from '../../src/copy/fetch.js';

const segment = fc.constantFrom('a', 'b', 'ab', 'c d', 'x.jpg');

it('is a directory above every file, and no deeper one is', () => {
  fc.assert(
    fc.property(
      fc.array(fc.array(segment, { minLength: 1, maxLength: 5 }), { minLength: 1, maxLength: 8 }),
      (paths) => {
        const files = paths.map((parts) => parts.join('/'));
        const common = deepestCommonDirectory(files);
        const below = (file: string, dir: string) => dir === '' || file.startsWith(`${dir}/`);
        expect(files.every((file) => below(file, common))).toBe(true);
        // One level deeper (towards the first file) leaves some file out.
        const first = (paths[0] as string[]).slice(0, -1);
        const depth = common === '' ? 0 : common.split('/').length;
        if (depth < first.length) {
          const deeper = first.slice(0, depth + 1).join('/');
          expect(files.every((file) => below(file, deeper))).toBe(false);
        }
      },
    ),
    { numRuns: 500 },
  );
});

it('names examples: one directory, siblings, the root', () => {
  expect(deepestCommonDirectory(['small/id7/1.jpg', 'small/id7/2.jpg'])).toBe('small/id7');
  expect(deepestCommonDirectory(['small/id7/1.jpg', 'small/id8/2.jpg'])).toBe('small');
  expect(deepestCommonDirectory(['small/id7/1.jpg', 'big.bin'])).toBe('');
  expect(deepestCommonDirectory(['a/b/c'])).toBe('a/b');
  expect(deepestCommonDirectory([])).toBe('');
});
