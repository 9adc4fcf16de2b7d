/**
 * Week math for signature keys. Pure: takes the instant as an argument.
 *
 * Gazelle keys each signature with the secret plus a year and an ISO week number.
 * Since 2024-12-30 it uses PHP `date('oW')` (ISO week-year + ISO week); before that
 * `date('YW')` (calendar year + ISO week), which differs only in the few days around
 * New Year where the ISO week belongs to the neighbouring year. The calendar rule is
 * accepted only when asked for (config calendarYearWeeks): in the last days of December
 * it yields the `YYYY01` key of the year's first week, so a link signed in week 1 would
 * verify again 51 weeks later.
 */

export type WeekRule = 'iso' | 'calendar';
/** Which instant a candidate week was taken from. */
type WeekInstant = 'now' | 'previous week' | 'skew';

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

/** The year rules a verifier accepts: ISO always, the calendar rule only on request. */
function weekRulesOf(calendarYearWeeks: boolean): readonly WeekRule[] {
  return calendarYearWeeks ? ['iso', 'calendar'] : ['iso'];
}

/**
 * Every week suffix a signature may carry at `nowMs`: this week, last week (links stay
 * valid for the current and the previous week) and the week of now + skew (signers in
 * timezones ahead of UTC roll over first), under the ISO rule and, with
 * `calendarYearWeeks`, the calendar rule too, without repeats.
 */
export function acceptedWeeks(nowMs: number, skewSeconds: number, calendarYearWeeks = false): WeekCandidate[] {
  const instants: Array<[WeekInstant, number]> = [
    ['now', nowMs],
    ['previous week', nowMs - WEEK_MS],
    ['skew', nowMs + skewSeconds * 1000],
  ];
  const candidates: WeekCandidate[] = [];
  for (const [instant, epochMs] of instants) {
    for (const rule of weekRulesOf(calendarYearWeeks)) {
      const suffix = weekSuffix(epochMs, rule);
      if (!candidates.some((candidate) => candidate.suffix === suffix)) {
        candidates.push({ suffix, rule, instant });
      }
    }
  }
  return candidates;
}

/** A week a signature may have been made in, about `weeksAgo` weeks before the instant searched from. */
export interface PastWeek {
  suffix: string;
  rule: WeekRule;
  /** Monday-to-Sunday weeks between the search instant's week and this one (0: this week). */
  weeksAgo: number;
}

/**
 * The week suffixes of every day from `nowMs` back `weeks` weeks, under both year rules,
 * nearest first, without repeats: where an old link may have been signed. Day by day,
 * not week by week, so the calendar-rule keys of the days around New Year are met too.
 * An admin tool's search, not a verifier's: nothing here is accepted.
 */
export function pastWeeks(nowMs: number, weeks: number): PastWeek[] {
  // Weeks counted from the Monday before 1970-01-01 (a Thursday), three days earlier.
  const weekNumber = (epochMs: number): number => Math.floor((Math.floor(epochMs / DAY_MS) + 3) / 7);
  const seen = new Set<string>();
  const found: PastWeek[] = [];
  for (let daysAgo = 0; daysAgo <= weeks * 7; daysAgo += 1) {
    const dayMs = nowMs - daysAgo * DAY_MS;
    for (const rule of ['iso', 'calendar'] as const) {
      const suffix = weekSuffix(dayMs, rule);
      if (seen.has(suffix)) continue;
      seen.add(suffix);
      found.push({ suffix, rule, weeksAgo: weekNumber(nowMs) - weekNumber(dayMs) });
    }
  }
  return found;
}
