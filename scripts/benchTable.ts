/**
 * The one table `npm run bench` prints: every bench module returns BenchRow[] and
 * scripts/bench.ts prints them together (and writes them with --json).
 *
 *   section  what is measured, e.g. "hit, worker_processes auto"
 *   name     the row inside it, e.g. "(b) our nginx, first hit"
 *   value    the median figure, in `unit` (req/s, µs, ms, MB, …)
 *   ratio    optional: value against the section's reference row (plain nginx for hits)
 */
export interface BenchRow {
  section: string;
  name: string;
  value: number;
  unit: string;
  ratio?: number;
  /** Optional free text (rounds, spread, why a row was skipped). */
  note?: string;
}

/** Facts about the machine a table was measured on, printed above it and kept in the JSON. */
export interface MachineFacts {
  date: string;
  cores: number;
  /** os.loadavg() (1, 5, 15 minutes) when the run started, and when it ended. */
  loadAverage: number[];
  loadAverageAtEnd?: number[];
  cpuModel: string;
  node: string;
  nginx: string | null;
  njs: string | null;
  wrk: string | null;
}

export function formatValue(value: number): string {
  if (!Number.isFinite(value)) return String(value);
  if (Math.abs(value) >= 100) return value.toFixed(0);
  if (Math.abs(value) >= 10) return value.toFixed(1);
  return value.toFixed(2);
}

/** The rows as a Markdown table grouped by section, in the order given. */
export function formatBenchTable(rows: readonly BenchRow[]): string {
  const lines = ['| section | row | value | unit | ratio |', '|---|---|---:|---|---:|'];
  for (const row of rows) {
    const ratio = row.ratio === undefined ? '' : row.ratio.toFixed(2);
    const name = row.note === undefined ? row.name : `${row.name} (${row.note})`;
    lines.push(`| ${row.section} | ${name} | ${formatValue(row.value)} | ${row.unit} | ${ratio} |`);
  }
  return lines.join('\n');
}

export function formatMachineFacts(facts: MachineFacts): string {
  return [
    `date ${facts.date}; ${facts.cores} cores (${facts.cpuModel}); load average ${facts.loadAverage.join(' ')}; node ${facts.node}`,
    `nginx ${facts.nginx ?? 'not found'}; njs ${facts.njs ?? 'not found'}; wrk ${facts.wrk ?? 'not found'}`,
  ].join('\n');
}

export function printBenchTable(rows: readonly BenchRow[], facts?: MachineFacts): void {
  if (facts !== undefined) console.log(formatMachineFacts(facts));
  console.log(formatBenchTable(rows));
}
