# syntax=docker/dockerfile:1
#
# facematch's container image, for users with Docker (or any BuildKit / Buildah / Podman):
#
#   docker build -t ghcr.io/facematch/facematch:0.1.0 .                     # CPU: the default target
#   docker build --target cuda -t ghcr.io/facematch/facematch:0.1.0-cuda .  # NVIDIA GPU (CUDA 12, cuDNN 9)
#   docker run --rm -v "$PWD/weights:/models" ghcr.io/facematch/facematch:0.1.0 models fetch --pack buffalo_l
#   docker run --rm -p 50051:50051 -p 8080:8080 -v "$PWD/weights:/models:ro" ghcr.io/facematch/facematch:0.1.0
#
# The CPU image is the one `scripts/build-image` makes without a daemon (what CI builds and
# test/integration/image.test.ts runs): the same Node.js, the same package, the same pruning (this
# file runs `scripts/build-image prune`), the same user, entrypoint, environment and labels. Only
# its base differs: here gcr.io/distroless/cc-debian12 (Debian 12's libc6, libstdc++6, libgcc-s1,
# plus ca-certificates, tzdata and libssl, a few MB more), there the same Debian packages
# extracted by mmdebstrap. No Docker engine runs where this project is developed, so THIS FILE IS
# NOT BUILT BY ANY TEST; the daemonless image is.
#
# What the image is:
#   - entrypoint `node /opt/facematch/dist/bin/cli.js`, so the arguments are a facematch command:
#     `serve` (the default), `controller`, `models fetch --pack P`, `detect photo.jpg` ...
#   - user 65532:65532 (distroless' nonroot), no shell, no package manager, no compiler: it runs
#     with a read-only root filesystem, given a writable /tmp and a /data for the embedded stores;
#   - no weights: FACEMATCH_MODELS_DIR=/models is a volume, filled by `facematch models fetch`
#     (sha256-checked) or mounted from elsewhere; the pack manifests (models/*.json) are inside;
#   - only linux-x64 native code: onnxruntime-node's darwin/win32/arm64 binaries and other
#     platforms' prebuilds are removed, sharp installs only @img/sharp-linux-x64 and its libvips.

ARG NODE_VERSION=24.22.3

# ---- build: compile and pack. Dev dependencies (TypeScript) live only in this stage. ------------
FROM node:${NODE_VERSION}-bookworm-slim AS build
# onnxruntime-node's install step would download its CUDA provider from NuGet; no install script
# is needed to compile (--ignore-scripts), and the switch also covers an npm older than 11.16.
ENV ONNXRUNTIME_NODE_INSTALL=skip
WORKDIR /src
COPY package.json package-lock.json ./
RUN --mount=type=cache,target=/root/.npm npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json README.md ./
COPY scripts/build.mjs scripts/
COPY models/*.json models/
COPY src src
# prepack runs the build (tsc + the SQL migrations copied beside their modules).
RUN mkdir /pkg && npm pack --pack-destination /pkg && mv /pkg/facematch-*.tgz /pkg/facematch.tgz

# ---- node: the Node.js binary without its debug symbols (127 -> 109 MB) ------------------------
FROM node:${NODE_VERSION}-bookworm-slim AS node
RUN apt-get update && apt-get install -y --no-install-recommends binutils \
 && cp /usr/local/bin/node /node && strip /node \
 && rm -rf /var/lib/apt/lists/*

# ---- app: the packed package, its production dependencies from the lockfile, pruned ------------
FROM node:${NODE_VERSION}-bookworm-slim AS app
ENV ONNXRUNTIME_NODE_INSTALL=skip
WORKDIR /opt/facematch
COPY --from=build /pkg/facematch.tgz /tmp/facematch.tgz
RUN tar -xzf /tmp/facematch.tgz --strip-components=1 --no-same-owner && rm /tmp/facematch.tgz
COPY package-lock.json ./
# --ignore-scripts: the CPU binaries of onnxruntime-node and sharp come in their npm packages.
RUN --mount=type=cache,target=/root/.npm npm ci --omit=dev --ignore-scripts --no-audit --no-fund
COPY scripts/build-image /tmp/build-image
RUN bash /tmp/build-image prune /opt/facematch \
 && chmod -R u+rwX,go+rX,go-w /opt/facematch \
 && mkdir -p /skel/data /skel/models

# ---- app-cuda: the same, with onnxruntime's CUDA execution provider ----------------------------
# onnxruntime-node's npm package carries only the CPU provider for linux-x64. Its install script
# (node_modules/onnxruntime-node/script/install.js, with install-metadata.js) takes the CUDA 12
# provider from NuGet: the package Microsoft.ML.OnnxRuntime.Gpu.Linux of the same version (1.30.0)
# from https://api.nuget.org/v3/index.json, files runtimes/linux-x64/native/
# libonnxruntime_providers_{cuda,shared,tensorrt}.so, written into bin/napi-v6/linux/x64/ beside
# libonnxruntime.so.1. ONNXRUNTIME_NODE_INSTALL=cuda12 asks it for exactly that. The TensorRT
# provider is removed again by prune (it needs TensorRT, which the base image does not have).
FROM app AS app-cuda
RUN cd node_modules/onnxruntime-node \
 && ONNXRUNTIME_NODE_INSTALL=cuda12 node script/install.js \
 && test -f bin/napi-v6/linux/x64/libonnxruntime_providers_cuda.so \
 && test -f bin/napi-v6/linux/x64/libonnxruntime_providers_shared.so \
 && bash /tmp/build-image prune /opt/facematch

# ---- cuda: the GPU image (docker build --target cuda) -----------------------------------------
# NOT TESTED: no GPU and no Docker engine where this project is developed. The parts:
#   - CUDA 12 runtime (libcudart, libcublas/Lt, libcufft, libcurand) and cuDNN 9: NVIDIA's
#     nvidia/cuda:<12.x>-cudnn-runtime-ubuntu24.04 image. onnxruntime's CUDA 12 builds run on any
#     CUDA 12.x (minor version compatibility) and need cuDNN 9 (onnxruntime.ai, "CUDA Execution
#     Provider", Requirements); the host needs an NVIDIA driver for CUDA 12 (>= 525) and the NVIDIA
#     container toolkit (Kubernetes: the device plugin, `nvidia.com/gpu` in the pod's limits).
#   - onnxruntime's CUDA provider: from NuGet, by onnxruntime-node's own install script (app-cuda).
#   - Node.js: the same binary as the CPU image (glibc 2.28+; Ubuntu 24.04 has 2.39).
# FACEMATCH_DEVICE=cuda is set; without a usable GPU the service logs a warning and runs on the CPU.
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 AS cuda
RUN groupadd --gid 65532 nonroot \
 && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /home/nonroot --shell /usr/sbin/nologin nonroot
COPY --from=node /node /usr/local/bin/node
COPY --from=app-cuda /opt/facematch /opt/facematch
COPY --from=app --chown=65532:65532 /skel/ /
ENV NODE_ENV=production \
    FACEMATCH_MODELS_DIR=/models \
    FACEMATCH_DATA_DIR=/data \
    FACEMATCH_DEVICE=cuda \
    ORT_DISABLE_TELEMETRY=1
WORKDIR /data
USER 65532:65532
EXPOSE 50051 8080 8081
LABEL org.opencontainers.image.title="facematch" \
      org.opencontainers.image.description="Face recognition service for event-photo platforms (CUDA 12 + cuDNN 9)" \
      org.opencontainers.image.source="https://github.com/facematch/facematch" \
      org.opencontainers.image.base.name="nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04"
ENTRYPOINT ["/usr/local/bin/node", "/opt/facematch/dist/bin/cli.js"]
CMD ["serve"]

# ---- cpu: the default image (last stage, so a plain `docker build .` makes it) ----------------
FROM gcr.io/distroless/cc-debian12:nonroot AS cpu
COPY --from=node /node /usr/local/bin/node
COPY --from=app /opt/facematch /opt/facematch
COPY --from=app --chown=65532:65532 /skel/ /
# ORT_DISABLE_TELEMETRY: onnxruntime 1.30 on Linux starts a telemetry client (HTTPS uploads, and a
# `:memory:.ses` file written into the working directory) unless this is set.
ENV PATH=/usr/local/bin:/usr/bin:/bin \
    NODE_ENV=production \
    FACEMATCH_MODELS_DIR=/models \
    FACEMATCH_DATA_DIR=/data \
    ORT_DISABLE_TELEMETRY=1
WORKDIR /data
USER 65532:65532
EXPOSE 50051 8080 8081
LABEL org.opencontainers.image.title="facematch" \
      org.opencontainers.image.description="Face recognition service for event-photo platforms: SCRFD detection, ArcFace embeddings, selfie <-> action-shot matching." \
      org.opencontainers.image.source="https://github.com/facematch/facematch" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"
ENTRYPOINT ["/usr/local/bin/node", "/opt/facematch/dist/bin/cli.js"]
CMD ["serve"]
