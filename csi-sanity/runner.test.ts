/**
 * The csi-sanity runner's own plumbing, checked with a stand-in for the csi-sanity binary (which is
 * not installable here): it must start the real driver, hand over a local:// parameters file and
 * fresh mount/staging paths, pass csi-sanity's exit status through, and clean up after itself.
 */
import { chmod, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';

const RUNNER = fileURLToPath(new URL('./run.sh', import.meta.url));
let tools: string;

beforeAll(async () => {
  tools = await mkdtemp('/tmp/dcsi-fake-sanity-');
});
afterAll(async () => {
  await rm(tools, { recursive: true, force: true });
});

async function standIn(body: string): Promise<string> {
  const path = join(tools, `csi-sanity-${Math.random().toString(16).slice(2)}`);
  await writeFile(path, `#!/usr/bin/env bash\nset -eu\n${body}\n`);
  await chmod(path, 0o755);
  return path;
}

const tmpEntries = async () =>
  (await readdir('/tmp')).filter((name) => name.startsWith('dcsi-sanity-'));

it('starts the driver, passes the csi-sanity flags and cleans up', async () => {
  const before = await tmpEntries();
  const fake = await standIn(`
endpoint=""; params=""; mountdir=""; staging=""
while [ $# -gt 0 ]; do case "$1" in
  --csi.endpoint) endpoint=$2; shift 2;;
  --csi.testvolumeparameters) params=$2; shift 2;;
  --csi.mountdir) mountdir=$2; shift 2;;
  --csi.stagingdir) staging=$2; shift 2;;
  *) shift;; esac; done
[ -S "\${endpoint#unix://}" ] || { echo "no socket at $endpoint"; exit 3; }
grep -q '^source: "local:///' "$params" || { echo "bad parameters"; exit 4; }
[ ! -e "$mountdir" ] && [ ! -e "$staging" ] || { echo "mount/staging dirs must not exist yet"; exit 5; }
echo "fake-sanity-ok"`);
  const result = await execa('bash', [RUNNER], { env: { CSI_SANITY: fake }, reject: false });
  expect(String(result.stdout)).toContain('fake-sanity-ok');
  expect(result.exitCode).toBe(0);
  expect(await tmpEntries()).toEqual(before);
});

it('passes a failing csi-sanity status through and shows the driver log', async () => {
  const fake = await standIn('echo "1 spec failed"; exit 1');
  const result = await execa('bash', [RUNNER], { env: { CSI_SANITY: fake }, reject: false });
  expect(result.exitCode).toBe(1);
  expect(String(result.stderr)).toMatch(/csi-sanity failed \(exit 1\)[\s\S]*"msg":"ready"/);
});

it('says how to provide csi-sanity when it is missing', async () => {
  const result = await execa('bash', [RUNNER], {
    env: { CSI_SANITY: '/nonexistent/csi-sanity', PATH: '/usr/bin:/bin' },
    reject: false,
  });
  expect(result.exitCode).toBe(2);
  expect(String(result.stderr)).toMatch(/CSI_SANITY=/);
});
