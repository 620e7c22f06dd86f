import {
  AttributeType,
  OnnxDataType,
  type OnnxAttribute,
  type OnnxGraph,
  type OnnxModel,
  type OnnxNode,
  type OnnxTensor,
  type OnnxValueInfo,
} from './proto.js';

/** A float attribute value; plain numbers are written as int attributes. */
export interface FloatAttribute {
  float: number;
}

export type AttributeValue = number | number[] | FloatAttribute | string | OnnxTensor | OnnxGraph;

export function float(value: number): FloatAttribute {
  return { float: value };
}

/** A dimension: a fixed size or a symbolic name such as `batch_size`. */
export type Dim = number | string;

type TensorData = Float32Array | Int32Array | BigInt64Array | Uint8Array;

/**
 * Builds an ONNX graph node by node. Each `op` call appends a node and returns the name of its
 * output; constants are deduplicated by value.
 */
export class GraphBuilder {
  readonly nodes: OnnxNode[] = [];
  readonly initializers: OnnxTensor[] = [];
  readonly inputs: OnnxValueInfo[] = [];
  readonly outputs: OnnxValueInfo[] = [];
  private readonly constants = new Map<string, string>();
  private nextId = 0;

  constructor(readonly prefix = '') {}

  /** Returns a fresh tensor name based on `hint`. */
  name(hint: string): string {
    return `${this.prefix}${hint}_${this.nextId++}`;
  }

  input(name: string, elemType: number, dims: Dim[]): string {
    this.inputs.push(valueInfo(name, elemType, dims));
    return name;
  }

  output(name: string, elemType: number, dims: Dim[]): void {
    this.outputs.push(valueInfo(name, elemType, dims));
  }

  initializer(name: string, data: TensorData, dims: number[]): string {
    this.initializers.push(tensor(name, data, dims));
    return name;
  }

  /** An int64 constant, shared between every node that uses the same values and shape. */
  int64(values: number[], dims: number[] = [values.length]): string {
    return this.constant('i64', values, dims, () => BigInt64Array.from(values.map(BigInt)));
  }

  float32(values: number[], dims: number[] = [values.length]): string {
    return this.constant('f32', values, dims, () => Float32Array.from(values));
  }

  private constant(kind: string, values: number[], dims: number[], make: () => TensorData): string {
    const key = `${kind}:${dims.join('x')}:${values.join(',')}`;
    const existing = this.constants.get(key);
    if (existing) {
      return existing;
    }
    const name = this.initializer(this.name(`const_${kind}`), make(), dims);
    this.constants.set(key, name);
    return name;
  }

  /** Appends a node with one output and returns the output's name. */
  op(opType: string, inputs: string[], attributes: Record<string, AttributeValue> = {}, outputName?: string): string {
    const [output] = this.opMulti(opType, inputs, 1, attributes, outputName ? [outputName] : undefined);
    return output;
  }

  /** Appends a node with `count` outputs and returns their names. */
  opMulti(
    opType: string,
    inputs: string[],
    count: number,
    attributes: Record<string, AttributeValue> = {},
    outputNames?: string[],
    domain = '',
  ): string[] {
    const outputs = outputNames ?? Array.from({ length: count }, () => this.name(opType));
    this.nodes.push({
      name: this.name(`${opType}_node`),
      opType,
      domain,
      input: inputs,
      output: outputs,
      attribute: Object.entries(attributes).map(([name, value]) => attribute(name, value)),
    });
    return outputs;
  }

  graph(name: string): OnnxGraph {
    return {
      name,
      node: this.nodes,
      initializer: this.initializers,
      input: this.inputs,
      output: this.outputs,
    };
  }

  model(name: string, opsetVersion: number, metadata: Record<string, string> = {}): OnnxModel {
    return {
      irVersion: 8,
      opsetImport: [{ domain: '', version: opsetVersion }],
      producerName: 'kvpack',
      producerVersion: '0.1.0',
      graph: this.graph(name),
      metadataProps: Object.entries(metadata).map(([key, value]) => ({ key, value })),
    };
  }
}

export function valueInfo(name: string, elemType: number, dims: Dim[]): OnnxValueInfo {
  return {
    name,
    type: {
      tensorType: {
        elemType,
        shape: { dim: dims.map((dim) => (typeof dim === 'number' ? { dimValue: dim } : { dimParam: dim })) },
      },
    },
  };
}

export function tensor(name: string, data: TensorData, dims: number[]): OnnxTensor {
  const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return { name, dims, dataType: dataTypeOf(data), rawData: bytes };
}

function dataTypeOf(data: TensorData): number {
  if (data instanceof Float32Array) return OnnxDataType.FLOAT;
  if (data instanceof Int32Array) return OnnxDataType.INT32;
  if (data instanceof BigInt64Array) return OnnxDataType.INT64;
  return OnnxDataType.UINT8;
}

function attribute(name: string, value: AttributeValue): OnnxAttribute {
  if (typeof value === 'number') {
    return { name, type: AttributeType.INT, i: value };
  }
  if (Array.isArray(value)) {
    return { name, type: AttributeType.INTS, ints: value };
  }
  if (typeof value === 'string') {
    return { name, type: AttributeType.STRING, s: new TextEncoder().encode(value) };
  }
  if ('float' in value) {
    return { name, type: AttributeType.FLOAT, f: value.float };
  }
  if ('node' in value) {
    return { name, type: AttributeType.GRAPH, g: value };
  }
  return { name, type: AttributeType.TENSOR, t: value };
}
