/**
 * The PhotoBatches of the cluster as the reconciler reads and writes them: an informer's cache
 * (list, then watch) and status writes through the status subresource.
 *
 * client-node 1.x facts this works around (see the PhotoBatch issue):
 * - its informer re-lists by itself on 410 Gone, but stops for good on any other watch error: we
 *   start it again, with exponential backoff, from the resource version it reached;
 * - a watch can go silent (a proxy or load balancer drops the stream without closing it): the
 *   watch is restarted every `watchRenewMs` (from its resource version: nothing is missed, nothing
 *   is listed again), and `health()` reports unhealthy when the informer has been down longer than
 *   `unhealthyAfterMs`, so the liveness probe restarts a controller that cannot watch;
 * - a status patch needs its content type set explicitly: it is a JSON patch (test the uid, then
 *   set /status), so a status is never written onto a new object that took the name of a deleted one.
 */
import {
  ApiException,
  CustomObjectsApi,
  makeInformer,
  PatchStrategy,
  setHeaderOptions,
  type Informer,
  type KubeConfig,
  type KubernetesListObject,
  type KubernetesObject,
  type ObjectCache,
} from '@kubernetes/client-node';
import { BackendUnavailableError, NotFoundError } from '../../domain/errors.js';
import type { Logger } from '../../telemetry/logger.js';
import { GROUP, PLURAL, VERSION, type PhotoBatchSpec, type PhotoBatchStatus } from '../../controller/photo-batch.js';
import type { BatchStore, PhotoBatch } from '../../controller/reconciler.js';
import { backoffDelay } from '../../controller/clock.js';

/** A PhotoBatch as the API server returns it. */
interface PhotoBatchObject extends KubernetesObject {
  spec?: PhotoBatchSpec;
  status?: PhotoBatchStatus;
}

export interface KubePhotoBatchStoreOptions {
  kubeConfig: KubeConfig;
  /** Watch one namespace; all namespaces when absent. */
  namespace?: string;
  /** Called with `namespace/name` whenever a PhotoBatch is added, changed or deleted. */
  onChange(key: string): void;
  log: Logger;
  /** The watch is restarted this often (a silent stream is found within this time). Default 5 min. */
  watchRenewMs?: number;
  /** health() is false once the informer has been down this long. Default 2 min. */
  unhealthyAfterMs?: number;
  /** First and longest delay before starting a failed informer again. Defaults 500 ms and 30 s. */
  restartBaseMs?: number;
  restartMaxMs?: number;
  /** Deadline of one status write. Default 10 s. */
  requestTimeoutMs?: number;
}

export interface StoreHealth {
  /** The first list has been read: the cache holds every PhotoBatch. */
  synced: boolean;
  /** The watch runs (or was down for less than `unhealthyAfterMs`). */
  healthy: boolean;
  /** Why not, when not. */
  message?: string;
}

const keyOf = (obj: KubernetesObject): string => `${obj.metadata?.namespace ?? ''}/${obj.metadata?.name ?? ''}`;

export class KubePhotoBatchStore implements BatchStore {
  private readonly api: CustomObjectsApi;
  private readonly informer: Informer<PhotoBatchObject> & ObjectCache<PhotoBatchObject>;
  private readonly stopped = new AbortController();
  private synced = false;
  private failures = 0;
  /** When the informer went down (undefined while it runs). */
  private downSince: number | undefined;
  private lastError = '';
  private restartTimer: NodeJS.Timeout | undefined;
  private renewTimer: NodeJS.Timeout | undefined;

  constructor(private readonly o: KubePhotoBatchStoreOptions) {
    this.api = o.kubeConfig.makeApiClient(CustomObjectsApi);
    const ns = o.namespace;
    const path = ns ? `/apis/${GROUP}/${VERSION}/namespaces/${ns}/${PLURAL}` : `/apis/${GROUP}/${VERSION}/${PLURAL}`;
    const list = (): Promise<KubernetesListObject<PhotoBatchObject>> =>
      (ns
        ? this.api.listNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: ns, plural: PLURAL })
        : this.api.listClusterCustomObject({ group: GROUP, version: VERSION, plural: PLURAL })) as Promise<KubernetesListObject<PhotoBatchObject>>;
    this.informer = makeInformer<PhotoBatchObject>(o.kubeConfig, path, list);
    const changed = (obj: PhotoBatchObject): void => o.onChange(keyOf(obj));
    this.informer.on('add', changed);
    this.informer.on('update', changed);
    this.informer.on('delete', changed);
    this.informer.on('connect', () => {
      if (this.downSince !== undefined) o.log.info({ after: this.failures }, 'PhotoBatch watch restarted');
    });
    this.informer.on('error', (err: unknown) => this.down(err));
  }

  /** Lists every PhotoBatch (the cache is then complete) and starts watching; resolves when listed. */
  async start(): Promise<void> {
    // ListWatch.start() resolves once the list is in the cache and the watch request is made; it
    // reports a failed list through the 'error' callback, not by rejecting.
    for (;;) {
      if (this.stopped.signal.aborted) return;
      this.lastError = '';
      await this.informer.start();
      if (!this.lastError) break;
      await new Promise((resolve) => setTimeout(resolve, backoffDelay(this.failures - 1, this.o.restartBaseMs ?? 500, this.o.restartMaxMs ?? 30_000)));
    }
    this.synced = true;
    this.downSince = undefined;
    this.failures = 0;
    this.scheduleRenew();
  }

  async stop(): Promise<void> {
    this.stopped.abort();
    clearTimeout(this.restartTimer);
    clearTimeout(this.renewTimer);
    await this.informer.stop();
  }

  /** Every PhotoBatch key in the cache (a resync requeues them all). */
  keys(): string[] {
    return this.informer.list().map(keyOf);
  }

  health(now = Date.now()): StoreHealth {
    const down = this.downSince !== undefined ? now - this.downSince : 0;
    const healthy = down < (this.o.unhealthyAfterMs ?? 120_000);
    const h: StoreHealth = { synced: this.synced, healthy };
    if (this.downSince !== undefined) h.message = `PhotoBatch watch down for ${Math.round(down / 1000)} s: ${this.lastError}`;
    return h;
  }

  get(key: string): PhotoBatch | undefined {
    const [namespace = '', name = ''] = key.split('/');
    const obj = this.informer.get(name, namespace);
    if (!obj?.metadata?.uid || !obj.spec) return undefined;
    return {
      key,
      uid: obj.metadata.uid,
      generation: obj.metadata.generation ?? 0,
      spec: obj.spec,
      status: obj.status ?? {},
    };
  }

  async writeStatus(key: string, uid: string, status: PhotoBatchStatus): Promise<void> {
    const [namespace = '', name = ''] = key.split('/');
    const patch = [
      { op: 'test', path: '/metadata/uid', value: uid },
      { op: 'add', path: '/status', value: status },
    ];
    try {
      await this.api.patchNamespacedCustomObjectStatus(
        { group: GROUP, version: VERSION, plural: PLURAL, namespace, name, body: patch },
        setHeaderOptions('Content-Type', PatchStrategy.JsonPatch),
      );
    } catch (error) {
      const code = error instanceof ApiException ? error.code : undefined;
      // 404: deleted; 409/422: the uid test failed (the name holds a new object). Either way this
      // object's status is gone with it; the next reconcile reads what the name holds now.
      if (code === 404 || code === 409 || code === 422) throw new NotFoundError(`PhotoBatch ${key} (uid ${uid}) is gone`, { cause: error });
      throw new BackendUnavailableError(`writing the status of PhotoBatch ${key}: ${describe(error)}`, { cause: error });
    }
  }

  private down(err: unknown): void {
    // Stopping the informer aborts its watch request, which it reports as an error: not a failure.
    if (this.stopped.signal.aborted || (err instanceof Error && err.name === 'AbortError')) return;
    this.lastError = describe(err);
    this.failures += 1;
    this.downSince ??= Date.now();
    clearTimeout(this.renewTimer);
    // start() retries the first list itself; after that, restart here.
    if (!this.synced) return;
    const delay = backoffDelay(this.failures - 1, this.o.restartBaseMs ?? 500, this.o.restartMaxMs ?? 30_000);
    this.o.log.warn({ err: this.lastError, retryInMs: delay }, 'PhotoBatch watch failed; restarting it');
    clearTimeout(this.restartTimer);
    this.restartTimer = setTimeout(() => void this.restart(), delay);
  }

  private async restart(): Promise<void> {
    if (this.stopped.signal.aborted) return;
    const failuresBefore = this.failures;
    await this.informer.start();
    if (this.failures === failuresBefore) {
      this.downSince = undefined;
      this.failures = 0;
      this.scheduleRenew();
    }
  }

  /** Restarts a healthy watch now and then: a stream that went silent is replaced. */
  private scheduleRenew(): void {
    clearTimeout(this.renewTimer);
    this.renewTimer = setTimeout(() => {
      if (this.stopped.signal.aborted || this.downSince !== undefined) return;
      void this.informer
        .stop()
        .then(() => this.restart())
        .catch((err: unknown) => this.down(err));
    }, this.o.watchRenewMs ?? 300_000);
    this.renewTimer.unref();
  }
}

function describe(error: unknown): string {
  if (error instanceof ApiException) return `HTTP ${String(error.code)}: ${String(error.body).slice(0, 300)}`;
  return error instanceof Error ? error.message : String(error);
}
