// Import rules for server/: no cycles, and every import points down the folder layers
// (a folder may import itself and the folders before it in LAYERS, never one after it).
const LAYERS = [
  ['errors', '^server/errors\\.ts$'],
  ['contract', '^server/contract/'],
  ['observe', '^server/observe/'],
  ['images', '^server/images/'],
  ['fetch', '^server/fetch/'],
  ['tree', '^server/tree/'],
  // the object store: beside the tree (it speaks the tree's names and facts), below
  // everything that will choose between the two
  ['storage', '^server/storage/'],
  ['takedown', '^server/takedown/'],
  ['config', '^server/config/'],
  ['stats', '^server/stats/'],
  ['service', '^server/service/'],
  ['ops', '^server/ops/'],
  ['http', '^server/http/'],
  ['deploy', '^server/deploy/'],
  ['cli', '^server/(cli/|cli\\.ts$)'],
];

const upwardImports = LAYERS.slice(0, -1).map(([name, path], index) => ({
  name: `layer-${name}-imports-upward`,
  comment: `${name} may import only the layers before it: ${LAYERS.slice(0, index).map(([lower]) => lower).join(', ') || 'none'}`,
  severity: 'error',
  from: { path },
  to: { path: LAYERS.slice(index + 1).map(([, higher]) => higher) },
}));

export default {
  forbidden: [
    { name: 'no-circular', severity: 'error', from: {}, to: { circular: true } },
    ...upwardImports,
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.build.json' },
    combinedDependencies: false,
  },
};
