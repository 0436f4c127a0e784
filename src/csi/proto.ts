// csi.proto loaded: the gRPC package the server and client use, and the fields it marks as secret.
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import protobuf from 'protobufjs';
import type { ProtoGrpcType } from './generated/csi.js';

/** proto/ sits two levels above this module both in src/ (tests) and in dist/ (runtime). */
export const CSI_PROTO_PATH = fileURLToPath(new URL('../../proto/csi.proto', import.meta.url));

/** Options shared by the runtime loader and the type generator (see `npm run gen`). */
const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
};

export type CsiPackage = ProtoGrpcType['csi']['v1'];

export function loadCsiPackage(protoPath = CSI_PROTO_PATH): CsiPackage {
  const definition = protoLoader.loadSync(protoPath, LOADER_OPTIONS);
  const loaded = grpc.loadPackageDefinition(definition) as unknown as ProtoGrpcType;
  return loaded.csi.v1;
}

interface ProtoJson {
  nested: { google: { nested: { protobuf: { nested: protobuf.INamespace['nested'] } } } };
}

/** csi.proto extends google/protobuf/descriptor.proto, which protobufjs only ships as JSON. */
function registerDescriptorProto(): void {
  const descriptor = createRequire(import.meta.url)(
    'protobufjs/google/protobuf/descriptor.json',
  ) as ProtoJson;
  protobuf.common(
    'descriptor',
    descriptor.nested.google.nested.protobuf.nested as Record<string, protobuf.INamespace>,
  );
}

export function loadCsiReflection(protoPath = CSI_PROTO_PATH): protobuf.Root {
  registerDescriptorProto();
  const root = new protobuf.Root();
  root.loadSync(protoPath, { keepCase: true });
  root.resolveAll();
  return root;
}

/**
 * Names of the fields marked `(csi_secret) = true`, per fully qualified message name.
 * Redaction follows the proto rather than a hand-kept list, so a new secret field is covered.
 */
export function secretFieldsByMessage(root: protobuf.Root): Map<string, string[]> {
  const result = new Map<string, string[]>();
  const visit = (ns: protobuf.NamespaceBase): void => {
    for (const nested of ns.nestedArray) {
      if (nested instanceof protobuf.Type) {
        const secret = nested.fieldsArray
          .filter((field) => field.options?.['(csi_secret)'] === true)
          .map((field) => field.name);
        if (secret.length > 0) result.set(nested.fullName.replace(/^\./, ''), secret);
      }
      if (nested instanceof protobuf.Namespace) visit(nested);
    }
  };
  visit(root);
  return result;
}
