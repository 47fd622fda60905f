/**
 * Every span and attribute name facematch emits, in one place (dashboards, the latency report and
 * the tests rely on them: a name committed here stays).
 *
 * The shape of a trace (README, "Tracing"):
 *   facematch.controller.photo              controller, root of the photo's own trace, linked to its
 *   │                                       batch run's span (facematch.controller.batch)
 *   └ facematch.v1.FacematchService/ProcessPhoto   CLIENT (controller), then Envoy's span if any
 *     └ facematch.v1.FacematchService/ProcessPhoto SERVER (service): rpc.* attributes
 *       └ facematch.process_photo           the use case
 *         ├ facematch.stage.fetch           one span per stage, photo id, event id, face counts
 *         ├ facematch.stage.decode ... facematch.stage.record
 * A REST call's SERVER span is `POST /v1/photos` (http.* attributes) in place of the gRPC one.
 */
import type { Stage } from '../domain/face.js';

export { STAGES, type Stage } from '../domain/face.js';

export const TRACER_NAME = 'facematch';
/** The controller's tracer (its spans' instrumentation scope). */
export const CONTROLLER_TRACER_NAME = 'facematch-controller';

/** service.name unless OTEL_SERVICE_NAME says otherwise. */
export const DEFAULT_SERVICE_NAME = { service: 'facematch', controller: 'facematch-controller' } as const;

/** The use cases' spans (INTERNAL), children of the transport's SERVER span. */
export const SPAN = {
  processPhoto: 'facematch.process_photo',
  searchFaces: 'facematch.search_faces',
  listUserPhotos: 'facematch.list_user_photos',
  listEventPhotos: 'facematch.list_event_photos',
  deletePhoto: 'facematch.delete_photo',
  forgetUser: 'facematch.forget_user',
} as const;

/** The controller's spans. */
export const CONTROLLER_SPAN = {
  /** One per run of a batch (a trace of its own); every photo span links to it. */
  batch: 'facematch.controller.batch',
  /** One per photo of a batch: the root of the photo's trace. */
  photo: 'facematch.controller.photo',
} as const;

/** The gRPC service's full name, `rpc.service` of the RPC spans. */
export const RPC_SERVICE = 'facematch.v1.FacematchService';
/** The RPC semantic conventions' span name, `{rpc.service}/{rpc.method}` (CLIENT and SERVER alike). */
export const rpcSpan = (method: string): string => `${RPC_SERVICE}/${method}`;
/** The HTTP semantic conventions' server span name, `{method} {http.route}`. */
export const httpSpan = (method: string, route: string): string => `${method} ${route}`;

/** One span per pipeline stage, children of the use case's span. */
export const stageSpan = (stage: Stage): string => `facematch.stage.${stage}`;

/**
 * RPC attribute names of the semantic conventions (v1.45 `ATTR_RPC_*`). They are still incubating,
 * so, as the package advises, copied here rather than imported from its unstable entry point at run
 * time; attributes.spec.ts checks each against the package's constant.
 */
export const RPC_ATTR = {
  system: 'rpc.system',
  service: 'rpc.service',
  method: 'rpc.method',
  grpcStatusCode: 'rpc.grpc.status_code',
} as const;

export const ATTR = {
  photoId: 'facematch.photo_id',
  eventId: 'facematch.event_id',
  kind: 'facematch.photo_kind',
  userId: 'facematch.user_id',
  /** Faces detected in the photo (on the use case's span, the detect/align/embed/store stages, the controller's photo span). */
  faces: 'facematch.faces',
  /** On an embed stage: faces of the photo embedded by other inference workers (src/inference/shared-embedding.ts). */
  sharedFaces: 'facematch.faces.shared',
  /** On a detect stage: detector runs, and of them those on every core (src/inference/spare-cores.ts). */
  detectorRuns: 'facematch.detector.runs',
  wideDetectorRuns: 'facematch.detector.wide_runs',
  /** On an embed stage: the photo's own embedder runs on every core (src/inference/spare-cores.ts). */
  wideEmbedderRuns: 'facematch.embedder.wide_runs',
  /** Matches made: an action shot's faces matched to a user, or the action-shot faces a selfie found. */
  matches: 'facematch.matches',
  threshold: 'facematch.threshold',
  imageBytes: 'facematch.image_bytes',
  /** The stable error code of a failure (INVALID_ARGUMENT, IMAGE_UNSUPPORTED, BACKEND_UNAVAILABLE ...). */
  errorCode: 'facematch.error_code',
  /** Resource: the model pack the service runs (FACEMATCH_MODEL_PACK). */
  modelPack: 'facematch.model_pack',
  /** Resource: the onnxruntime execution provider actually used, `cpu` or `cuda` (after any fallback). */
  provider: 'facematch.provider',
  /** The PhotoBatch, `namespace/name` (controller spans). */
  batch: 'facematch.batch',
  batchNamespace: 'facematch.batch.namespace',
  batchName: 'facematch.batch.name',
  batchUid: 'facematch.batch.uid',
  /** The batch run's end: `complete`, `failed`, `stopped` ... and its counts. */
  batchOutcome: 'facematch.batch.outcome',
  processed: 'facematch.batch.processed',
  failed: 'facematch.batch.failed',
  matched: 'facematch.batch.matched',
  /**
   * On the local root span of a trace the head sampler had not kept but the tail rule exported
   * (`failed` or `slow`): that process's part of the trace is there, its callers' may not be.
   */
  keptBy: 'facematch.trace.kept',
} as const;
