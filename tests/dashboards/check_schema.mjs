// Type-checks Grafana dashboard JSON against the published @grafana/schema types with tsc.
//
//   node check_schema.mjs NODE_MODULES_PARENT WORK_DIR dashboard.json...
//
// For each dashboard it writes one TypeScript file that assigns the JSON to `Dashboard` (excess
// property checks catch misspelled keys, missing required keys and wrong types; string enums are
// matched by their values), and each panel's
// `options` and `fieldConfig.defaults.custom` to that panel type's own Options / FieldConfig types
// (deep-partial: a key may be left out, but every key given must exist and have the right type).
// All files are checked in one tsc run. Exits 1 on any type error or on a panel type it has no
// types for.
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';

const [modulesParent, workDir, ...dashboards] = process.argv.slice(2);
if (!modulesParent || !workDir || dashboards.length === 0) {
  console.error('usage: node check_schema.mjs NODE_MODULES_PARENT WORK_DIR dashboard.json...');
  process.exit(2);
}

const cfg = (dir, mod) => `@grafana/schema/dist/esm/raw/composable/${dir}/panelcfg/x/${mod}_types.gen`;
const panelTypes = {
  timeseries: cfg('timeseries', 'TimeSeriesPanelCfg'),
  stat: cfg('stat', 'StatPanelCfg'),
  heatmap: cfg('heatmap', 'HeatmapPanelCfg'),
  table: cfg('table', 'TablePanelCfg'),
  text: cfg('text', 'TextPanelCfg'),
  gauge: cfg('gauge', 'GaugePanelCfg'),
  bargauge: cfg('bargauge', 'BarGaugePanelCfg'),
};

fs.mkdirSync(workDir, { recursive: true });
// Resolve @grafana/schema and typescript from the npm cache dir in the build tree.
const nm = path.join(workDir, 'node_modules');
try { fs.unlinkSync(nm); } catch {}
fs.symlinkSync(path.resolve(modulesParent, 'node_modules'), nm);
fs.writeFileSync(path.join(workDir, 'package.json'), '{"type": "module", "private": true}\n');

let ok = true;
const failed = new Set();  // dashboards with an error
const files = [];
for (const [i, f] of dashboards.entries()) {
  const dash = JSON.parse(fs.readFileSync(f, 'utf8'));
  const out = [
    `// ${f}`,
    `import type { Dashboard } from '@grafana/schema';`,
    ...Object.entries(panelTypes).map(([t, m]) => `import type * as ${t}_cfg from '${m}';`),
    // JSON has no enums: a string enum accepts its values' literals ("list" for
    // LegendDisplayMode.List); numeric enums already accept their numbers.
    `type Json<T> = T extends string ? \`\${T}\` : T extends Array<infer E> ? Array<Json<E>> : T extends object ? { [K in keyof T]: Json<T[K]> } : T;`,
    `type DeepPartial<T> = T extends string ? \`\${T}\` : T extends Array<infer E> ? Array<DeepPartial<E>> : T extends object ? { [K in keyof T]?: DeepPartial<T[K]> } : T;`,
    `export const dashboard: Json<Dashboard> = ${JSON.stringify(dash, null, 1)};`,
  ];
  const flat = [];
  for (const p of dash.panels ?? []) {
    flat.push(p);
    for (const q of p.panels ?? []) flat.push(q);
  }
  for (const p of flat) {
    if (p.type === 'row') continue;
    if (!(p.type in panelTypes)) {
      ok = false;
      failed.add(f);
      console.log(`${f}: panel ${p.id} "${p.title}": no schema types for panel type "${p.type}"`);
      continue;
    }
    const tag = `panel_${p.id}`;
    out.push(`// panel ${p.id}: ${p.title}`);
    out.push(`export const ${tag}_options: DeepPartial<${p.type}_cfg.Options> = ${JSON.stringify(p.options ?? {}, null, 1)};`);
    const custom = p.fieldConfig?.defaults?.custom;
    if (custom !== undefined) {
      out.push(`export const ${tag}_custom: DeepPartial<${p.type}_cfg.FieldConfig> = ${JSON.stringify(custom, null, 1)};`);
    }
  }
  const ts = path.join(workDir, `dashboard_${i}.ts`);
  fs.writeFileSync(ts, out.join('\n') + '\n');
  files.push(ts);
}

const tsc = path.resolve(modulesParent, 'node_modules/typescript/bin/tsc');
let tscOut = '';
try {
  execFileSync(process.execPath, [tsc, '--noEmit', '--strict', '--skipLibCheck', '--module', 'nodenext',
    '--moduleResolution', 'nodenext', '--target', 'es2022', ...files], { stdio: 'pipe', cwd: workDir });
} catch (e) {
  ok = false;
  tscOut = `${e.stdout}${e.stderr}`;
  for (const m of tscOut.matchAll(/dashboard_(\d+)\.ts\(/g)) failed.add(dashboards[Number(m[1])]);
  if (!tscOut.includes('error TS')) failed.add('(tsc failed)');
}
for (const [i, f] of dashboards.entries()) {
  if (!failed.has(f)) { console.log(`${f}: OK (@grafana/schema Dashboard and panel types)`); continue; }
  console.log(`${f}: FAIL`);
  for (const line of tscOut.split('\n')) {
    if (line.startsWith(`dashboard_${i}.ts(`)) console.log(`  ${line}`);
  }
}
if (failed.has('(tsc failed)')) console.log(`tsc failed:\n${tscOut}`);
process.exit(ok ? 0 : 1);
