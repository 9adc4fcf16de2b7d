// Preloaded into a CLI process by a test (`node --import`): as the process exits, writes
// its peak resident set (VmHWM, in KiB) to the file PEAK_RSS_FILE names. Read at exit,
// it cannot miss a peak the way sampling from outside can.
import { readFileSync, writeFileSync } from 'node:fs';

const target = process.env.PEAK_RSS_FILE;
if (target !== undefined) {
  process.on('exit', () => {
    const peak = /^VmHWM:\s+(\d+) kB$/m.exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? '';
    writeFileSync(target, peak);
  });
}
