# syntax=docker/dockerfile:1
# The driver's image: node plugin, controller and the cache clients' launcher (one image, three
# roles chosen by arguments). BASE_IMAGE is for scripts/image.sh's local stand-in where the
# official node image cannot be pulled; the published image is built on the default.
ARG BASE_IMAGE=node
ARG BASE_TAG=20.20.2-bookworm-slim

FROM ${BASE_IMAGE}:${BASE_TAG} AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY proto ./proto
COPY src ./src
RUN npm run build && npm prune --omit=dev && chmod 0755 dist/main.js

FROM ${BASE_IMAGE}:${BASE_TAG}
# The cache-client programs and what the driver runs: rclone, s3fs, FUSE 3 (fusermount3),
# bindfs, mount/umount/findmnt, mkfs.ext4 (SSD cache images).
RUN apt-get update \
 && apt-get install -y --no-install-recommends rclone s3fs fuse3 bindfs util-linux mount e2fsprogs ca-certificates \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/apt/archives/*.deb
WORKDIR /app
COPY --from=build /src/package.json ./
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist ./dist
COPY --from=build /src/proto ./proto
RUN ln -s /app/dist/main.js /usr/local/bin/dataset-cache-csi
ENTRYPOINT ["node", "/app/dist/main.js"]
