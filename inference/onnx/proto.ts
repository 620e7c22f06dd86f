import protobuf from 'protobufjs';

/**
 * The ONNX protobuf messages kvpack reads and writes, declared with the field numbers of
 * onnx/onnx.proto (IR version 10). Every field of the messages a model file uses is declared,
 * so a decoded model re-encodes without losing data.
 */
const onnxSchema = {
  nested: {
    onnx: {
      nested: {
        StringStringEntryProto: { fields: { key: { type: 'string', id: 1 }, value: { type: 'string', id: 2 } } },
        OperatorSetIdProto: { fields: { domain: { type: 'string', id: 1 }, version: { type: 'int64', id: 2 } } },
        TensorShapeProto: {
          fields: { dim: { rule: 'repeated', type: 'Dimension', id: 1 } },
          nested: {
            Dimension: {
              oneofs: { value: { oneof: ['dimValue', 'dimParam'] } },
              fields: {
                dimValue: { type: 'int64', id: 1 },
                dimParam: { type: 'string', id: 2 },
                denotation: { type: 'string', id: 3 },
              },
            },
          },
        },
        TypeProto: {
          oneofs: { value: { oneof: ['tensorType', 'sequenceType', 'mapType', 'optionalType', 'sparseTensorType'] } },
          fields: {
            tensorType: { type: 'Tensor', id: 1 },
            sequenceType: { type: 'Sequence', id: 4 },
            mapType: { type: 'Map', id: 5 },
            optionalType: { type: 'Optional', id: 9 },
            sparseTensorType: { type: 'SparseTensor', id: 8 },
            denotation: { type: 'string', id: 6 },
          },
          nested: {
            Tensor: { fields: { elemType: { type: 'int32', id: 1 }, shape: { type: 'TensorShapeProto', id: 2 } } },
            Sequence: { fields: { elemType: { type: 'TypeProto', id: 1 } } },
            Map: { fields: { keyType: { type: 'int32', id: 1 }, valueType: { type: 'TypeProto', id: 2 } } },
            Optional: { fields: { elemType: { type: 'TypeProto', id: 1 } } },
            SparseTensor: { fields: { elemType: { type: 'int32', id: 1 }, shape: { type: 'TensorShapeProto', id: 2 } } },
          },
        },
        ValueInfoProto: {
          fields: {
            name: { type: 'string', id: 1 },
            type: { type: 'TypeProto', id: 2 },
            docString: { type: 'string', id: 3 },
            metadataProps: { rule: 'repeated', type: 'StringStringEntryProto', id: 4 },
          },
        },
        TensorProto: {
          fields: {
            dims: { rule: 'repeated', type: 'int64', id: 1 },
            dataType: { type: 'int32', id: 2 },
            segment: { type: 'Segment', id: 3 },
            floatData: { rule: 'repeated', type: 'float', id: 4, options: { packed: true } },
            int32Data: { rule: 'repeated', type: 'int32', id: 5, options: { packed: true } },
            stringData: { rule: 'repeated', type: 'bytes', id: 6 },
            int64Data: { rule: 'repeated', type: 'int64', id: 7, options: { packed: true } },
            name: { type: 'string', id: 8 },
            docString: { type: 'string', id: 12 },
            rawData: { type: 'bytes', id: 9 },
            externalData: { rule: 'repeated', type: 'StringStringEntryProto', id: 13 },
            dataLocation: { type: 'int32', id: 14 },
            doubleData: { rule: 'repeated', type: 'double', id: 10, options: { packed: true } },
            uint64Data: { rule: 'repeated', type: 'uint64', id: 11, options: { packed: true } },
            metadataProps: { rule: 'repeated', type: 'StringStringEntryProto', id: 16 },
          },
          nested: { Segment: { fields: { begin: { type: 'int64', id: 1 }, end: { type: 'int64', id: 2 } } } },
        },
        SparseTensorProto: {
          fields: {
            values: { type: 'TensorProto', id: 1 },
            indices: { type: 'TensorProto', id: 2 },
            dims: { rule: 'repeated', type: 'int64', id: 3 },
          },
        },
        AttributeProto: {
          fields: {
            name: { type: 'string', id: 1 },
            refAttrName: { type: 'string', id: 21 },
            docString: { type: 'string', id: 13 },
            type: { type: 'int32', id: 20 },
            f: { type: 'float', id: 2 },
            i: { type: 'int64', id: 3 },
            s: { type: 'bytes', id: 4 },
            t: { type: 'TensorProto', id: 5 },
            g: { type: 'GraphProto', id: 6 },
            sparseTensor: { type: 'SparseTensorProto', id: 22 },
            tp: { type: 'TypeProto', id: 14 },
            floats: { rule: 'repeated', type: 'float', id: 7 },
            ints: { rule: 'repeated', type: 'int64', id: 8 },
            strings: { rule: 'repeated', type: 'bytes', id: 9 },
            tensors: { rule: 'repeated', type: 'TensorProto', id: 10 },
            graphs: { rule: 'repeated', type: 'GraphProto', id: 11 },
            sparseTensors: { rule: 'repeated', type: 'SparseTensorProto', id: 23 },
            typeProtos: { rule: 'repeated', type: 'TypeProto', id: 15 },
          },
        },
        NodeProto: {
          fields: {
            input: { rule: 'repeated', type: 'string', id: 1 },
            output: { rule: 'repeated', type: 'string', id: 2 },
            name: { type: 'string', id: 3 },
            opType: { type: 'string', id: 4 },
            domain: { type: 'string', id: 7 },
            overload: { type: 'string', id: 8 },
            attribute: { rule: 'repeated', type: 'AttributeProto', id: 5 },
            docString: { type: 'string', id: 6 },
            metadataProps: { rule: 'repeated', type: 'StringStringEntryProto', id: 9 },
          },
        },
        TensorAnnotation: {
          fields: {
            tensorName: { type: 'string', id: 1 },
            quantParameterTensorNames: { rule: 'repeated', type: 'StringStringEntryProto', id: 2 },
          },
        },
        GraphProto: {
          fields: {
            node: { rule: 'repeated', type: 'NodeProto', id: 1 },
            name: { type: 'string', id: 2 },
            initializer: { rule: 'repeated', type: 'TensorProto', id: 5 },
            sparseInitializer: { rule: 'repeated', type: 'SparseTensorProto', id: 15 },
            docString: { type: 'string', id: 10 },
            input: { rule: 'repeated', type: 'ValueInfoProto', id: 11 },
            output: { rule: 'repeated', type: 'ValueInfoProto', id: 12 },
            valueInfo: { rule: 'repeated', type: 'ValueInfoProto', id: 13 },
            quantizationAnnotation: { rule: 'repeated', type: 'TensorAnnotation', id: 14 },
            metadataProps: { rule: 'repeated', type: 'StringStringEntryProto', id: 16 },
          },
        },
        TrainingInfoProto: {
          fields: {
            initialization: { type: 'GraphProto', id: 1 },
            algorithm: { type: 'GraphProto', id: 2 },
            initializationBinding: { rule: 'repeated', type: 'StringStringEntryProto', id: 3 },
            updateBinding: { rule: 'repeated', type: 'StringStringEntryProto', id: 4 },
          },
        },
        FunctionProto: {
          fields: {
            name: { type: 'string', id: 1 },
            input: { rule: 'repeated', type: 'string', id: 4 },
            output: { rule: 'repeated', type: 'string', id: 5 },
            attribute: { rule: 'repeated', type: 'string', id: 6 },
            attributeProto: { rule: 'repeated', type: 'AttributeProto', id: 11 },
            node: { rule: 'repeated', type: 'NodeProto', id: 7 },
            docString: { type: 'string', id: 8 },
            opsetImport: { rule: 'repeated', type: 'OperatorSetIdProto', id: 9 },
            domain: { type: 'string', id: 10 },
            overload: { type: 'string', id: 13 },
            valueInfo: { rule: 'repeated', type: 'ValueInfoProto', id: 12 },
            metadataProps: { rule: 'repeated', type: 'StringStringEntryProto', id: 14 },
          },
        },
        ModelProto: {
          fields: {
            irVersion: { type: 'int64', id: 1 },
            opsetImport: { rule: 'repeated', type: 'OperatorSetIdProto', id: 8 },
            producerName: { type: 'string', id: 2 },
            producerVersion: { type: 'string', id: 3 },
            domain: { type: 'string', id: 4 },
            modelVersion: { type: 'int64', id: 5 },
            docString: { type: 'string', id: 6 },
            graph: { type: 'GraphProto', id: 7 },
            metadataProps: { rule: 'repeated', type: 'StringStringEntryProto', id: 14 },
            trainingInfo: { rule: 'repeated', type: 'TrainingInfoProto', id: 20 },
            functions: { rule: 'repeated', type: 'FunctionProto', id: 25 },
          },
        },
      },
    },
  },
};

const root = protobuf.Root.fromJSON(onnxSchema);
export const ModelProtoType = root.lookupType('onnx.ModelProto');

/** TensorProto.DataType values used by kvpack. */
export const OnnxDataType = {
  FLOAT: 1,
  UINT8: 2,
  INT8: 3,
  INT32: 6,
  INT64: 7,
  BOOL: 9,
  FLOAT16: 10,
  DOUBLE: 11,
} as const;

/** AttributeProto.AttributeType values. */
export const AttributeType = {
  FLOAT: 1,
  INT: 2,
  STRING: 3,
  TENSOR: 4,
  GRAPH: 5,
  FLOATS: 6,
  INTS: 7,
  STRINGS: 8,
} as const;

export interface OnnxDimension {
  dimValue?: number | Long;
  dimParam?: string;
}

export interface OnnxValueInfo {
  name: string;
  type?: { tensorType?: { elemType: number; shape?: { dim: OnnxDimension[] } } };
}

export interface OnnxTensor {
  name: string;
  dims: Array<number | Long>;
  dataType: number;
  rawData?: Uint8Array;
  floatData?: number[];
  int32Data?: number[];
  int64Data?: Array<number | Long>;
  externalData?: Array<{ key: string; value: string }>;
  dataLocation?: number;
}

export interface OnnxAttribute {
  name: string;
  type: number;
  f?: number;
  i?: number | Long;
  s?: Uint8Array;
  t?: OnnxTensor;
  g?: OnnxGraph;
  floats?: number[];
  ints?: Array<number | Long>;
  strings?: Uint8Array[];
}

export interface OnnxNode {
  name?: string;
  opType: string;
  domain?: string;
  input: string[];
  output: string[];
  attribute?: OnnxAttribute[];
}

export interface OnnxGraph {
  name?: string;
  node: OnnxNode[];
  initializer: OnnxTensor[];
  input: OnnxValueInfo[];
  output: OnnxValueInfo[];
  valueInfo?: OnnxValueInfo[];
}

export interface OnnxModel {
  irVersion: number | Long;
  opsetImport: Array<{ domain?: string; version: number | Long }>;
  producerName?: string;
  producerVersion?: string;
  graph: OnnxGraph;
  metadataProps?: Array<{ key: string; value: string }>;
}

/** A protobuf int64 decoded by protobufjs as a `long` object. */
interface Long {
  toNumber(): number;
}

export function encodeModel(model: OnnxModel): Uint8Array {
  const message = ModelProtoType.fromObject(model);
  return ModelProtoType.encode(message).finish();
}

export function decodeModel(bytes: Uint8Array): OnnxModel {
  return ModelProtoType.decode(bytes) as unknown as OnnxModel;
}

/** Converts a protobuf int64 (a number or a Long) to a number. */
export function toNumber(value: number | Long | undefined | null): number {
  if (value === undefined || value === null) {
    return 0;
  }
  return typeof value === 'number' ? value : value.toNumber();
}
