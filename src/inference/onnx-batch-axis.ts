/**
 * Graph surgery that gives an ONNX model exported with a fixed batch of 1 a symbolic batch axis, so
 * that several faces go through one run. It changes only what hard-codes the batch: dimension 0 of
 * the graph's inputs and outputs becomes a named symbol, and a Reshape whose constant target shape
 * starts with 1 gets 0 there ("copy dimension 0 of the input"). Weights and every other node are
 * left byte for byte; fields this ONNX schema does not know survive the round trip (Protobuf-ES
 * keeps unknown fields). The rewrite is deterministic: the same input bytes give the same output
 * bytes, so the output's sha256 can be pinned in a pack manifest.
 *
 * It refuses, with MODEL_MISMATCH, graphs whose batch it cannot free safely (a Flatten to one row, a
 * Reshape target computed at run time that still says 1, a target shared with another node), rather
 * than produce a model that silently mixes faces.
 */
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import {
  ModelProtoSchema,
  StringStringEntryProtoSchema,
  TensorProto_DataType,
  TensorShapeProto_DimensionSchema,
  type GraphProto,
  type NodeProto,
  type TensorProto,
  type ValueInfoProto,
} from 'onnx-buf';
import { ModelMismatchError } from '../domain/errors.js';

/** Recorded in the model's metadata_props, so a derived file says what it is. */
export const DYNAMIC_BATCH_MARK = 'facematch.transform';

export interface BatchAxisRewrite {
  /** The rewritten model. */
  bytes: Uint8Array;
  /** Names of the graph inputs and outputs whose dimension 0 became the symbol. */
  values: string[];
  /** Names of the Reshape nodes whose target shape now copies dimension 0. */
  reshapes: string[];
  /** value_info entries dropped (shape hints recorded for batch 1). */
  droppedValueInfo: number;
}

/** Rewrites a fixed-batch-1 model to a dynamic batch axis named `symbol`. */
export function withDynamicBatch(model: Uint8Array, symbol = 'N'): BatchAxisRewrite {
  const fail = (why: string): never => {
    throw new ModelMismatchError(`cannot give the model a dynamic batch axis: ${why}`);
  };
  let proto;
  try {
    proto = fromBinary(ModelProtoSchema, model);
  } catch (cause) {
    throw new ModelMismatchError(`not an ONNX model: ${(cause as Error).message}`, { cause });
  }
  const graph = proto.graph ?? fail('the model has no graph');
  const initializers = new Map(graph.initializer.map((t) => [t.name, t]));
  const constants = new Map<string, TensorProto>();
  for (const node of graph.node) {
    const value = node.opType === 'Constant' ? node.attribute.find((a) => a.name === 'value')?.t : undefined;
    if (value && node.output[0]) constants.set(node.output[0], value);
  }

  const values: string[] = [];
  const free = (v: ValueInfoProto, what: string): void => {
    const type = v.type?.value;
    const shape = type?.case === 'tensorType' ? type.value.shape : fail(`${what} "${v.name}" is not a tensor`);
    const dim0 = shape?.dim[0] ?? fail(`${what} "${v.name}" has no shape`);
    const d = dim0.value;
    if (d.case === 'dimParam') return; // already symbolic
    if (d.case !== 'dimValue' || d.value !== 1n) fail(`${what} "${v.name}" has batch ${String(d.value)}, not 1`);
    shape!.dim[0] = create(TensorShapeProto_DimensionSchema, {
      value: { case: 'dimParam', value: symbol },
      denotation: dim0.denotation,
    });
    values.push(v.name);
  };
  for (const v of graph.input) if (!initializers.has(v.name)) free(v, 'input');
  for (const v of graph.output) free(v, 'output');

  const reshapes: string[] = [];
  const users = useCounts(graph);
  for (const node of graph.node) {
    if (node.opType === 'Flatten') {
      const axis = intAttribute(node, 'axis') ?? 1n;
      if (axis === 0n) fail(`Flatten "${node.name}" has axis 0, which folds the batch into one row`);
    }
    if (node.opType !== 'Reshape') continue;
    const target = node.input[1] ?? fail(`Reshape "${node.name}" has no shape input`);
    const tensor = initializers.get(target) ?? constants.get(target);
    if (!tensor) continue; // computed at run time (Shape → Gather → Concat): follows the batch already
    const shape = int64Values(tensor) ?? fail(`Reshape "${node.name}" has a shape "${target}" that is not int64`);
    if (shape[0] !== 1n) continue;
    if (intAttribute(node, 'allowzero') === 1n) fail(`Reshape "${node.name}" has allowzero=1, so 0 cannot copy the batch`);
    if ((users.get(target) ?? 0) > 1) fail(`Reshape "${node.name}" shares its shape "${target}" with other nodes`);
    setInt64Values(tensor, [0n, ...shape.slice(1)]);
    reshapes.push(node.name || target);
  }

  // value_info holds optional shape hints, recorded for batch 1; with a free batch they would contradict
  // the real shapes, and onnxruntime infers them again anyway.
  const droppedValueInfo = graph.valueInfo.length;
  graph.valueInfo = [];
  proto.metadataProps = proto.metadataProps.filter((p) => p.key !== DYNAMIC_BATCH_MARK);
  proto.metadataProps.push(create(StringStringEntryProtoSchema, { key: DYNAMIC_BATCH_MARK, value: `dynamic-batch ${symbol}` }));
  return { bytes: toBinary(ModelProtoSchema, proto), values, reshapes, droppedValueInfo };
}

function useCounts(graph: GraphProto): Map<string, number> {
  const counts = new Map<string, number>();
  for (const node of graph.node) for (const i of node.input) counts.set(i, (counts.get(i) ?? 0) + 1);
  return counts;
}

function intAttribute(node: NodeProto, name: string): bigint | undefined {
  const a = node.attribute.find((x) => x.name === name);
  return a?.i;
}

/** TensorProto.data_type is a plain int32 field that holds a DataType. */
const INT64: number = TensorProto_DataType.INT64;

/** An INT64 tensor's values, from int64_data or little-endian raw_data; undefined for other types. */
function int64Values(t: TensorProto): bigint[] | undefined {
  if (t.dataType !== INT64) return undefined;
  if (t.rawData.length === 0) return [...t.int64Data];
  const view = new DataView(t.rawData.buffer, t.rawData.byteOffset, t.rawData.byteLength);
  return Array.from({ length: t.rawData.byteLength / 8 }, (_, i) => view.getBigInt64(i * 8, true));
}

function setInt64Values(t: TensorProto, values: bigint[]): void {
  if (t.rawData.length === 0) {
    t.int64Data = values;
    return;
  }
  const raw = new Uint8Array(values.length * 8);
  const view = new DataView(raw.buffer);
  values.forEach((v, i) => view.setBigInt64(i * 8, v, true));
  t.rawData = raw;
}
