// Lint over server/, scripts/ and test/ with type information (typescript-eslint).
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

// TEMPORARY, removed by the lead after merging: findings in files that other branches are
// rewriting at the same time; each entry turns off only the rules found in that file.
const TEMPORARY_IGNORES_IN_FILES_BEING_REWRITTEN = [
  ['server/cli/serve.ts', ['@typescript-eslint/consistent-type-imports']],
  ['server/fetch/admission.ts', ['@typescript-eslint/unbound-method']],
  ['server/http/app.ts', ['@typescript-eslint/prefer-promise-reject-errors']],
  ['server/http/cluster.ts', ['@typescript-eslint/require-await']],
  ['server/ops/lineReports.ts', ['@typescript-eslint/only-throw-error']],
  ['server/service/fetchingImages.ts', ['@typescript-eslint/await-thenable', 'prefer-const']],
];

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'nginx/**', 'contrib/**', '**/*.mjs', '**/*.js'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    files: ['server/**/*.ts', 'scripts/**/*.ts', 'test/**/*.ts'],
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': ['error', {
        // node:test runs the promise that describe/it/test return; nothing awaits it.
        allowForKnownSafeCalls: [{ from: 'package', package: 'node:test', name: ['describe', 'it', 'test', 'suite'] }],
      }],
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/consistent-type-imports': ['error', { fixStyle: 'inline-type-imports' }],
      '@typescript-eslint/no-explicit-any': 'error',
      // Escaping or refusing control characters is what those patterns are for.
      'no-control-regex': 'off',
    },
  },
  {
    // Tests hand async stand-ins to interfaces that take promise-returning functions.
    files: ['test/**/*.ts'],
    rules: { '@typescript-eslint/require-await': 'off' },
  },
  ...TEMPORARY_IGNORES_IN_FILES_BEING_REWRITTEN.map(([file, rules]) => ({
    files: [file],
    rules: Object.fromEntries(rules.map((rule) => [rule, 'off'])),
  })),
);
