/**
 * Week math for signature keys. Pure: takes the instant as an argument.
 *
 * Gazelle keys each signature with the secret plus a year and an ISO week number.
 * Since 2024-12-30 it uses PHP `date('oW')` (ISO week-year + ISO week); before that
 * `date('YW')` (calendar year + ISO week), which differs only in the few days around
 * New Year where the ISO week belongs to the neighbouring year. We accept both so links
 * from either Gazelle keep working.
 */

export type WeekRule = 'iso' | 'calendar';
/** Which instant a candidate week was taken from. */
export type WeekInstant = 'now' | 'previous week' | 'skew';

export interface WeekCandidate {
  /** `YYYYWW`, appended to the secret to form the HMAC key. */
  suffix: string;
  rule: WeekRule;
  instant: WeekInstant;
}

const DAY_MS = 86_400_000;
const WEEK_MS = 7 * DAY_MS;

/** ISO-8601 week-year and week number of an instant, in UTC. */
export function isoWeekOf(epochMs: number): { isoYear: number; week: number } {
  const date = new Date(epochMs);
  const midnight = Date.UTC(date.getUTCFullYear(), date.getUTCMonth(), date.getUTCDate());
  const mondayBasedDay = (date.getUTCDay() + 6) % 7; // Monday 0 … Sunday 6
  // The ISO week belongs to the year that holds its Thursday.
  const thursday = new Date(midnight + (3 - mondayBasedDay) * DAY_MS);
  const isoYear = thursday.getUTCFullYear();
  const dayOfYear = Math.floor((thursday.getTime() - Date.UTC(isoYear, 0, 1)) / DAY_MS);
  return { isoYear, week: Math.floor(dayOfYear / 7) + 1 };
}

/** The `YYYYWW` suffix for an instant under one year rule. */
export function weekSuffix(epochMs: number, rule: WeekRule): string {
  const { isoYear, week } = isoWeekOf(epochMs);
  const year = rule === 'iso' ? isoYear : new Date(epochMs).getUTCFullYear();
  return `${year}${String(week).padStart(2, '0')}`;
}

/**
 * Every week suffix a signature may carry at `nowMs`: this week, last week (links stay
 * valid for the current and the previous week) and the week of now + skew (signers in
 * timezones ahead of UTC roll over first), each under both year rules, without repeats.
 */
export function acceptedWeeks(nowMs: number, skewSeconds: number): WeekCandidate[] {
  const instants: Array<[WeekInstant, number]> = [
    ['now', nowMs],
    ['previous week', nowMs - WEEK_MS],
    ['skew', nowMs + skewSeconds * 1000],
  ];
  const candidates: WeekCandidate[] = [];
  for (const [instant, epochMs] of instants) {
    for (const rule of ['iso', 'calendar'] as const) {
      const suffix = weekSuffix(epochMs, rule);
      if (!candidates.some((candidate) => candidate.suffix === suffix)) {
        candidates.push({ suffix, rule, instant });
      }
    }
  }
  return candidates;
}
