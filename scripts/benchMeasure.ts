/** Small measuring helpers the bench scripts share. */
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';

/** The median (the mean of the middle two for an even count). */
export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? (sorted[middle] ?? 0) : ((sorted[middle - 1] ?? 0) + (sorted[middle] ?? 0)) / 2;
}

/** A process's resident set from /proc, in KiB; 0 once it is gone. */
export async function rssKiB(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
  const match = /^VmRSS:\s+(\d+) kB/m.exec(status);
  return match === null ? 0 : Number(match[1]);
}

/** utime + stime of a process (all its threads) in clock ticks, from /proc, or null off Linux. */
export function cpuTicks(pid: number): number | null {
  return ticksOf(`/proc/${pid}/stat`);
}

/** utime + stime of a process's main thread alone (its JavaScript, for node) in clock ticks, or null off Linux. */
export function mainThreadCpuTicks(pid: number): number | null {
  return ticksOf(`/proc/${pid}/task/${pid}/stat`);
}

function ticksOf(statPath: string): number | null {
  try {
    const stat = readFileSync(statPath, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(fields[11]) + Number(fields[12]); // fields 14 and 15 of proc(5)
  } catch {
    return null;
  }
}
