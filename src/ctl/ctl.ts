// `dataset-cache-csi ctl`: CSI calls by hand to a driver socket, like csc, with JSON output.
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import { CsiClient } from '../csi/client.js';
import { messageOf } from '../util/errors.js';

export const CTL_USAGE = `usage: dataset-cache-csi ctl COMMAND [options]   (talks to a driver socket, like csc)
  identity                                  plugin info, capabilities, probe
  node-info                                 node id and node capabilities
  create NAME [--param K=V]...              CreateVolume (prints the volume)
  delete VOLUME_ID                          DeleteVolume
  list                                      ListVolumes
  stage VOLUME_ID --staging-path DIR [--param K=V]...
  publish VOLUME_ID --target-path DIR [--staging-path DIR] [--param K=V]... [--readonly]
  unpublish VOLUME_ID --target-path DIR
  unstage VOLUME_ID --staging-path DIR
  stats VOLUME_ID --path DIR                NodeGetVolumeStats (usage and condition)
options:
  --endpoint unix:///path.sock    default $CSI_ENDPOINT or the kubelet plugin socket
  --param K=V                     parameters (create) or volume context (stage, publish)
  --secrets-file FILE             JSON object of secrets (kept out of the process list)
  --access-mode MODE              default MULTI_NODE_MULTI_WRITER
Output is JSON on stdout; a failed call prints its gRPC code and message and exits 1.`;

const DEFAULT_ENDPOINT = 'unix:///var/lib/kubelet/plugins/dataset-cache.csi.dev/csi.sock';

class UsageError extends Error {}

function keyValues(list: string[] | undefined): Record<string, string> {
  const result: Record<string, string> = {};
  for (const item of list ?? []) {
    const at = item.indexOf('=');
    if (at <= 0) throw new UsageError(`--param ${item}: expected KEY=VALUE`);
    result[item.slice(0, at)] = item.slice(at + 1);
  }
  return result;
}

async function secretsFrom(file: string | undefined): Promise<Record<string, string>> {
  if (file === undefined) return {};
  const parsed = JSON.parse(await readFile(file, 'utf8')) as unknown;
  if (
    typeof parsed !== 'object' ||
    parsed === null ||
    !Object.values(parsed).every((v) => typeof v === 'string')
  ) {
    throw new UsageError(`${file}: expected a JSON object of strings`);
  }
  return parsed as Record<string, string>;
}

/** The human CLI over a driver socket, for debugging a node or a controller by hand. */
export async function runCtl(
  argv: string[],
  env: NodeJS.ProcessEnv = process.env,
): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        endpoint: { type: 'string' },
        param: { type: 'string', multiple: true },
        'secrets-file': { type: 'string' },
        'access-mode': { type: 'string', default: 'MULTI_NODE_MULTI_WRITER' },
        'staging-path': { type: 'string', default: '' },
        'target-path': { type: 'string' },
        path: { type: 'string' },
        readonly: { type: 'boolean', default: false },
      },
    });
  } catch (err) {
    process.stderr.write(`dataset-cache-csi ctl: ${messageOf(err)}\n${CTL_USAGE}\n`);
    return 2;
  }
  const { values, positionals } = parsed;
  const [command, subject] = positionals;
  const client = new CsiClient(values.endpoint ?? env.CSI_ENDPOINT ?? DEFAULT_ENDPOINT);
  const capability = {
    mount: { fs_type: '', mount_flags: [] },
    access_mode: { mode: values['access-mode'] as 'MULTI_NODE_MULTI_WRITER' },
  };
  const need = (value: string | undefined, what: string): string => {
    if (value === undefined || value === '') throw new UsageError(`${command} needs ${what}`);
    return value;
  };
  try {
    const params = keyValues(values.param);
    const secrets = await secretsFrom(values['secrets-file']);
    let result: unknown;
    switch (command) {
      case 'identity':
        result = {
          info: await client.identity.GetPluginInfo({}),
          capabilities: await client.identity.GetPluginCapabilities({}),
          probe: await client.identity.Probe({}),
        };
        break;
      case 'node-info':
        result = {
          info: await client.node.NodeGetInfo({}),
          capabilities: await client.node.NodeGetCapabilities({}),
        };
        break;
      case 'create':
        result = await client.controller.CreateVolume({
          name: need(subject, 'a NAME'),
          volume_capabilities: [capability],
          parameters: params,
          secrets,
        });
        break;
      case 'delete':
        result = await client.controller.DeleteVolume({
          volume_id: need(subject, 'a VOLUME_ID'),
          secrets,
        });
        break;
      case 'list':
        result = await client.controller.ListVolumes({});
        break;
      case 'stage':
        result = await client.node.NodeStageVolume({
          volume_id: need(subject, 'a VOLUME_ID'),
          staging_target_path: need(values['staging-path'], '--staging-path'),
          volume_capability: capability,
          volume_context: params,
          secrets,
        });
        break;
      case 'publish':
        result = await client.node.NodePublishVolume({
          volume_id: need(subject, 'a VOLUME_ID'),
          staging_target_path: values['staging-path'],
          target_path: need(values['target-path'], '--target-path'),
          volume_capability: capability,
          readonly: values.readonly,
          volume_context: params,
          secrets,
        });
        break;
      case 'unpublish':
        result = await client.node.NodeUnpublishVolume({
          volume_id: need(subject, 'a VOLUME_ID'),
          target_path: need(values['target-path'], '--target-path'),
        });
        break;
      case 'unstage':
        result = await client.node.NodeUnstageVolume({
          volume_id: need(subject, 'a VOLUME_ID'),
          staging_target_path: need(values['staging-path'], '--staging-path'),
        });
        break;
      case 'stats':
        result = await client.node.NodeGetVolumeStats({
          volume_id: need(subject, 'a VOLUME_ID'),
          volume_path: need(values.path, '--path'),
        });
        break;
      default:
        throw new UsageError(
          command === undefined ? 'a COMMAND is needed' : `unknown command ${command}`,
        );
    }
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
    return 0;
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`dataset-cache-csi ctl: ${err.message}\n${CTL_USAGE}\n`);
      return 2;
    }
    const status = err as Partial<grpc.ServiceError>;
    if (typeof status.code === 'number') {
      process.stderr.write(
        `dataset-cache-csi ctl: ${grpc.status[status.code]}: ${status.details ?? ''}\n`,
      );
      return 1;
    }
    throw err;
  } finally {
    client.close();
  }
}
