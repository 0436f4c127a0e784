/**
 * Writes deploy/kubernetes/ from the Helm chart with its default values, so that the plain
 * manifests and the chart never drift apart (a test renders the chart and compares).
 */
import { writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { renderChart } from './chart.js';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const CHART_DIR = join(ROOT, 'charts', 'dataset-cache-csi');
export const MANIFEST_DIR = join(ROOT, 'deploy', 'kubernetes');
export const NAMESPACE = 'dataset-cache-csi';
export const GENERATED_HEADER =
  '# Generated from charts/dataset-cache-csi with its default values by `npm run manifests`;\n# edit the chart, not this file.\n';

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  for (const [name, text] of await renderChart(CHART_DIR, NAMESPACE)) {
    await writeFile(join(MANIFEST_DIR, name), GENERATED_HEADER + text);
    process.stdout.write(`wrote deploy/kubernetes/${name}\n`);
  }
}
