// The CSI Identity service: the plugin's name and version, whether it offers a controller, and whether it is ready yet.
import type { IdentityHandlers } from '../csi/generated/csi/v1/Identity.js';
import type { ServiceImpl } from '../csi/handlers.js';

export interface IdentityOptions {
  name: string;
  version: string;
  controller: boolean;
  /** True once the services this process runs can serve (journal loaded, clients adopted). */
  isReady: () => boolean;
}

export function createIdentityService(options: IdentityOptions): ServiceImpl<IdentityHandlers> {
  return {
    async GetPluginInfo() {
      return { name: options.name, vendor_version: options.version };
    },
    async GetPluginCapabilities() {
      return {
        capabilities: options.controller ? [{ service: { type: 'CONTROLLER_SERVICE' } }] : [],
      };
    },
    async Probe() {
      return { ready: { value: options.isReady() } };
    },
  };
}
