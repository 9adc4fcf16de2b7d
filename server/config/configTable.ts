/**
 * The README's configuration table, derived from the schema (server/config/schema.ts):
 * one row per setting with its variable, default, allowed values and doc. Pure; the
 * script `npm run docs:config` (scripts/config-table.ts) writes it into README.md between
 * the markers, and test/configTable.test.ts fails when the two differ.
 */
import { SETTINGS, type Setting, type TextForm } from './schema.js';

export const TABLE_START = '<!-- config-table:start -->';
export const TABLE_END = '<!-- config-table:end -->';

/** How a variable of each form is written, where it is more than the plain value. */
const ENV_NOTES: Partial<Record<TextForm, string>> = {
  list: 'comma-separated',
  numberList: 'comma-separated',
  buckets: '`i,f,t,old:legacy`',
};

function code(text: string): string {
  return `\`${text}\``;
}

/** A table cell: a `|` would end it. */
function cell(text: string): string {
  return text.replace(/\|/g, '\\|');
}

function envCell(setting: Setting): string {
  const { env, nullWord } = setting.meta;
  if (env === undefined) return '';
  const note = nullWord === undefined ? ENV_NOTES[setting.form] : `${code(nullWord)} or empty: null`;
  return note === undefined ? code(env) : `${code(env)} (${note})`;
}

/** The flag without its argument (`--max-bytes`): the commands' help gives the rest. */
function flagCell(setting: Setting): string {
  const { flag } = setting.meta;
  return flag === undefined ? '' : code(flag.split(' ')[0] ?? flag);
}

function defaultCell(setting: Setting): string {
  const value = setting.defaultValue;
  if (setting.meta.shownDefault !== undefined) return code(setting.meta.shownDefault);
  if (Array.isArray(value)) return code(value.length === 0 ? '[]' : value.join(','));
  return code(String(value));
}

function valuesCell(setting: Setting): string {
  if (setting.meta.values !== undefined) return setting.meta.values;
  if (setting.choices !== null) return setting.choices.map(code).join(', ');
  if (setting.form === 'boolean') return `${code('true')}, ${code('false')}`;
  if (setting.range !== null) {
    const { min, max } = setting.range;
    return max === Number.MAX_SAFE_INTEGER ? `${min} or more` : `${min} to ${max}`;
  }
  return '';
}

/** The table, one row per setting, in the schema's order. */
export function renderConfigTable(settings: readonly Setting[] = SETTINGS): string {
  const rows = settings.map((setting) =>
    [code(setting.key), envCell(setting), flagCell(setting), defaultCell(setting), valuesCell(setting), setting.meta.doc].map(cell).join(' | '),
  );
  return ['| key | env | flag | default | values | meaning |', '|---|---|---|---|---|---|', ...rows.map((row) => `| ${row} |`)].join('\n');
}

/** `readme` with the text between the markers replaced by the table. */
export function replaceConfigTable(readme: string, table = renderConfigTable()): string {
  const start = readme.indexOf(TABLE_START);
  const end = readme.indexOf(TABLE_END);
  if (start === -1 || end === -1 || end < start) throw new Error(`README has no ${TABLE_START} … ${TABLE_END} markers`);
  return `${readme.slice(0, start + TABLE_START.length)}\n${table}\n${readme.slice(end)}`;
}
