/**
 * The one atomic writer (server/tree/atomicFile.ts): what is on disk after a write, a
 * staged file, a placed one, a discarded one and a failed one, in a real temp directory.
 */
import assert from 'node:assert/strict';
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { isTempFileName, tempFileWriter } from '../server/contract/layout.js';
import { stageFile, THIS_HOST_TAG, writeFileAtomic } from '../server/tree/atomicFile.js';
import { makeTempRoot, removeTempRoot } from './helpers.js';

let root: string;

before(async () => {
  root = await makeTempRoot('imageproxy-atomic-');
});

after(async () => {
  await removeTempRoot(root);
});

async function namesIn(directory: string): Promise<string[]> {
  return (await readdir(directory)).sort();
}

describe('writeFileAtomic', () => {
  const cases: Array<{ name: string; before: string | null; text: string }> = [
    { name: 'a new file', before: null, text: '{"version":1}\n' },
    { name: 'over an existing file', before: 'old contents that are longer than the new ones\n', text: 'new\n' },
    { name: 'an empty file', before: 'something\n', text: '' },
  ];
  for (const [index, testCase] of cases.entries()) {
    it(`${testCase.name}: the whole text under its name, no temp file left`, async () => {
      const directory = join(root, `write-${index}`);
      const path = join(directory, 'state.json');
      if (testCase.before !== null) await writeFileAtomic(path, testCase.before, { makeDirectory: true });
      await writeFileAtomic(path, testCase.text, { makeDirectory: true });
      assert.equal(await readFile(path, 'utf8'), testCase.text);
      assert.deepEqual(await namesIn(directory), ['state.json']);
    });
  }

  it('refuses a missing directory unless told to make it, and leaves nothing', async () => {
    const directory = join(root, 'missing');
    await assert.rejects(writeFileAtomic(join(directory, 'a.json'), 'x'), { code: 'ENOENT' });
    await assert.rejects(stat(directory), { code: 'ENOENT' });
  });
});

describe('stageFile', () => {
  it('is invisible until placed or committed; the temp name says this process and host wrote it', async () => {
    const directory = join(root, 'staged');
    const path = join(directory, 'Key.jpg');
    const staged = await stageFile(path, Buffer.from('bytes'), { makeDirectory: true });
    const [temp, ...rest] = await namesIn(directory);
    assert.deepEqual(rest, []);
    assert.ok(temp !== undefined && isTempFileName(temp), `a temp name: ${temp}`);
    assert.deepEqual(tempFileWriter(temp), { pid: process.pid, hostTag: THIS_HOST_TAG });
    await staged.commit();
    assert.deepEqual(await namesIn(directory), ['Key.jpg']);
    assert.equal(await readFile(path, 'utf8'), 'bytes');
    assert.equal(staged.modifiedMs, (await stat(path)).mtime.getTime());
  });

  it('place renames without more: the file is there whole', async () => {
    const directory = join(root, 'placed');
    const path = join(directory, 'Key.json');
    await (await stageFile(path, '{}\n', { makeDirectory: true })).place();
    assert.deepEqual(await namesIn(directory), ['Key.json']);
    assert.equal(await readFile(path, 'utf8'), '{}\n');
  });

  it('discard removes the temp file and leaves the file it would have replaced', async () => {
    const directory = join(root, 'discarded');
    const path = join(directory, 'Key.jpg');
    await writeFileAtomic(path, 'kept', { makeDirectory: true });
    await (await stageFile(path, 'abandoned')).discard();
    assert.deepEqual(await namesIn(directory), ['Key.jpg']);
    assert.equal(await readFile(path, 'utf8'), 'kept');
  });

  it('a commit that cannot rename (a directory at the name) throws and leaves no temp file', async () => {
    const directory = join(root, 'blocked');
    const path = join(directory, 'Key.jpg');
    await writeFileAtomic(join(path, 'inside'), 'x', { makeDirectory: true });
    const staged = await stageFile(path, 'bytes');
    await assert.rejects(staged.commit(), (error: NodeJS.ErrnoException) => error.code === 'EISDIR' || error.code === 'ENOTEMPTY' || error.code === 'EEXIST');
    assert.deepEqual(await namesIn(directory), ['Key.jpg']);
    assert.ok((await stat(path)).isDirectory());
  });

  it('a name inside a file (ENOTDIR) fails before anything is written', async () => {
    const file = join(root, 'plain-file');
    await writeFile(file, 'x');
    await assert.rejects(stageFile(join(file, 'Key.jpg'), 'bytes', { makeDirectory: true }));
    assert.equal(await readFile(file, 'utf8'), 'x');
  });
});
